package cancel_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// The helper worker process is this test binary run again with the schema
// in this variable.
const helperSchemaEnv = "GRAFT_CANCEL_HELPER_SCHEMA"

// helperModeEnv says where the helper worker hangs to be killed: "refund"
// (the default) or "charge".
const helperModeEnv = "GRAFT_CANCEL_HELPER_MODE"

const killLeaseTTL = 2 * time.Second

// TestKilledDuringRefund runs the renewal on a worker process, cancels it,
// and kills the process with SIGKILL inside the refund, after the provider
// booked the refund and before the engine recorded it. Another worker
// resumes the run after the lease expires and runs the refund again under
// the same idempotency key: the ledger shows exactly one refund.
func TestKilledDuringRefund(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{NoWorker: true, LeaseTTL: killLeaseTTL})
	ctx := grafttest.Context(t, 60*time.Second)

	helper := testenv.Spawn(t, "TestHelperWorker", helperSchemaEnv+"="+v.schema)
	helper.WaitLine(t, "ready", 60*time.Second)

	o := Order{ID: "op-kill", Domain: "kill.com", Amount: 4200, PauseAfter: "charge"}
	run := v.start(v.s.renew, o, nil)
	v.waitCompleted(o.ID, "shop.charge")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "customer asked"))
	helper.WaitLine(t, "refunded", 60*time.Second)
	_, refunds := v.ledger(o.ID)
	require.Equal(t, 1, refunds, "the helper booked the refund")
	helper.Kill(t)
	hist, err := v.c.History(ctx, o.ID)
	require.NoError(t, err)
	for _, st := range hist[0].Steps {
		if st.Name == "shop.refund" {
			require.Equal(t, "started", st.Status, "the engine must not have recorded the refund's result before the kill")
		}
	}

	grafttest.StartWorker(t, v.e, engine.WorkerConfig{})
	_, err = run.Result(ctx)
	requireCanceled(t, err, "customer asked")

	charges, refunds := v.ledger(o.ID)
	require.Equal(t, 1, charges)
	require.Equal(t, 1, refunds, "exactly one refund")
	require.Equal(t, 2, v.refundAttempts(o.ID), "the refund ran in both processes")
	require.Equal(t, 1, v.refundKeys(o.ID), "under one idempotency key")
	var pids int
	require.NoError(t, v.p.db.QueryRowContext(ctx, `SELECT count(DISTINCT pid) FROM `+v.p.tbl("refund_attempts")).Scan(&pids))
	require.Equal(t, 2, pids)
	require.Equal(t, []string{"refund"}, v.p.callLog(), "this process only replayed the charge")
	r := v.report(o.ID)
	require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
	require.Equal(t, []string{"shop.refund:compensated"}, undoStatuses(r))
	require.JSONEq(t, fmt.Sprintf(`{"ID": %d}`, *v.refundID(o.ID)), string(r.Steps[0].Result))
	status, refundRef, _ := v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
	require.Equal(t, v.refundID(o.ID), refundRef)
}

// TestKilledDuringChargeThenCancelled kills the worker process with SIGKILL
// inside the charge, after the provider booked it and before the engine
// recorded its result, then cancels the operation before any worker resumes
// it. The charge's start was durable, so its outcome is unknown, not "not
// done": the worker that resumes the run runs the charge again under the
// same idempotency key (the provider finds the charge it booked), and the
// cancellation refunds it, exactly once. The ledger balances.
func TestKilledDuringChargeThenCancelled(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{NoWorker: true, LeaseTTL: killLeaseTTL})
	ctx := grafttest.Context(t, 60*time.Second)

	helper := testenv.Spawn(t, "TestHelperWorker", helperSchemaEnv+"="+v.schema, helperModeEnv+"=charge")
	helper.WaitLine(t, "ready", 60*time.Second)

	o := Order{ID: "op-kill-charge", Domain: "charge.com", Amount: 1700}
	run := v.start(v.s.renew, o, nil)
	helper.WaitLine(t, "charged", 60*time.Second)
	charges, _ := v.ledger(o.ID)
	require.Equal(t, 1, charges, "the helper booked the charge")
	helper.Kill(t)
	require.NoError(t, v.c.Cancel(ctx, o.ID, "customer asked"))

	grafttest.StartWorker(t, v.e, engine.WorkerConfig{})
	_, err := run.Result(ctx)
	requireCanceled(t, err, "customer asked")

	charges, refunds := v.ledger(o.ID)
	require.Equal(t, 1, charges, "the charge is booked once")
	require.Equal(t, 1, refunds, "and refunded once")
	var balance int
	require.NoError(t, v.p.db.QueryRowContext(ctx, `SELECT sum(CASE kind WHEN 'charge' THEN amount ELSE -amount END)
		FROM `+v.p.tbl("ledger")+` WHERE op = $1`, o.ID).Scan(&balance))
	require.Zero(t, balance, "the ledger balances")
	require.Equal(t, 1, v.refundAttempts(o.ID))
	require.Equal(t, []string{"charge", "refund"}, v.p.callLog(), "this process ran the charge again, then the refund")
	r := v.report(o.ID)
	require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
	require.Equal(t, []string{"shop.refund:compensated"}, undoStatuses(r))
	status, refundRef, _ := v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
	require.Equal(t, v.refundID(o.ID), refundRef)
	hist, err := v.c.History(ctx, o.ID)
	require.NoError(t, err)
	require.Equal(t, "shop.charge", hist[0].Steps[0].Name)
	require.Equal(t, 2, hist[0].Steps[0].Attempts, "the attempt lost with the killed worker counts")
}

// TestHelperWorker is the worker process of the kill tests; it does nothing
// in a normal test run.
func TestHelperWorker(t *testing.T) {
	schema := os.Getenv(helperSchemaEnv)
	if schema == "" {
		t.Skip("helper process of TestKilledDuringRefund")
	}
	p := newProvider(grafttest.DB(t), schema)
	if os.Getenv(helperModeEnv) == "charge" {
		p.hangAfterCharge = true
	} else {
		p.hangAfterRefund = true
	}
	e, _, err := buildEngine(engine.Config{DB: p.db, DatabaseURL: grafttest.DatabaseURL(), Schema: schema,
		LeaseTTL: killLeaseTTL, PollInterval: 50 * time.Millisecond}, p)
	require.NoError(t, err)
	w, err := e.NewWorker(engine.WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
