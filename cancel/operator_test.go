package cancel_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// A refund that keeps failing stops the operation for an operator: the run
// stays open (unloaded while it waits), its report and the legacy row say so
// with the error, and a further cancel does not disturb it. When the
// provider is back, Retry resumes the run, which runs the refund again under
// the same idempotency key, and the operation ends cancelled with the refund
// reference on the legacy row.
func TestNeedsOperatorThenRetry(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{UnloadAfter: 100 * time.Millisecond})
	ctx := grafttest.Context(t, 40*time.Second)
	v.p.refundDown.Store(true)
	o := Order{ID: "op-stuck", Domain: "stuck.com", Amount: 700, PauseAfter: "register"}
	run := v.start(v.s.renew, o, nil)
	v.waitCompleted(o.ID, "shop.register")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "customer asked"))

	r := v.waitOutcome(o.ID, cancel.OutcomeNeedsOperator)
	require.Equal(t, []string{"shop.unregister:compensated", "shop.refund:failed"}, undoStatuses(r))
	require.Contains(t, r.Steps[1].Error, "payment provider unavailable")
	require.ErrorIs(t, r.Problem(), engine.ErrNeedsOperator)
	var app *engine.ApplicationError
	require.ErrorAs(t, r.Problem(), &app)
	var failed cancel.StepReport
	require.NoError(t, json.Unmarshal(app.Details, &failed))
	require.Equal(t, "shop.refund", failed.Undo)
	status, refundRef, problem := v.legacy(o.ID)
	require.Equal(t, "needs_operator", status)
	require.Nil(t, refundRef)
	require.NotNil(t, problem)
	require.Contains(t, *problem, "payment provider unavailable")
	require.Equal(t, 3, v.refundAttempts(o.ID), "Config.ActivityOptions allows 3 attempts")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "again"), "cancelling again is harmless")
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := v.c.Describe(ctx, o.ID)
		return err == nil && info.Status == engine.StatusWaiting
	}, "the run waits for the operator, unloaded")
	status, _, _ = v.legacy(o.ID)
	require.Equal(t, "needs_operator", status)
	require.Equal(t, cancel.OutcomeNeedsOperator, v.report(o.ID).Outcome)

	v.p.refundDown.Store(false)
	require.NoError(t, cancel.Retry(ctx, v.c, o.ID))
	_, err := run.Result(ctx)
	requireCanceled(t, err, "customer asked")

	_, refunds := v.ledger(o.ID)
	require.Equal(t, 1, refunds)
	require.Equal(t, 4, v.refundAttempts(o.ID))
	require.Equal(t, 1, v.refundKeys(o.ID), "every attempt, the operator's included, used one key")
	r = v.report(o.ID)
	require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
	require.Equal(t, []string{"shop.unregister:compensated", "shop.refund:compensated"}, undoStatuses(r))
	require.JSONEq(t, `{"ID": `+strconv.FormatInt(*v.refundID(o.ID), 10)+`}`, string(r.Steps[1].Result))
	status, refundRef, problem = v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
	require.Nil(t, problem)
	require.Equal(t, v.refundID(o.ID), refundRef)
	require.Equal(t, []string{"charge", "register", "unregister", "refund", "refund", "refund", "refund"}, v.p.callLog(),
		"unregister ran once; only the failed refund was retried")
}

// An operator who refunded by hand resolves the failed step; a resolve that
// names another step is ignored, so a stale one cannot settle a new failure.
func TestNeedsOperatorResolved(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{})
	ctx := grafttest.Context(t, 40*time.Second)
	v.p.refundDown.Store(true)
	o := Order{ID: "op-manual", Domain: "manual.com", Amount: 300, PauseAfter: "charge"}
	run := v.start(v.s.renew, o, nil)
	v.waitCompleted(o.ID, "shop.charge")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "fraud"))
	r := v.waitOutcome(o.ID, cancel.OutcomeNeedsOperator)
	failed := r.Steps[0].Step

	require.Error(t, cancel.Resolve(ctx, v.c, o.ID, "", "no step"))
	require.NoError(t, cancel.Resolve(ctx, v.c, o.ID, "s999", "wrong step"))
	// An unknown action (sent around the API's check, or recorded before
	// Action refused one) does not decode: the run ignores it, as it
	// ignored one before, and a replay of its history does the same.
	require.NoError(t, v.c.Signal(ctx, o.ID, cancel.OperatorSignal, json.RawMessage(`{"action":"retyr","step":"`+failed+`"}`)))
	require.NoError(t, cancel.Resolve(ctx, v.c, o.ID, failed, "refunded by hand, ticket 42"))
	_, err := run.Result(ctx)
	requireCanceled(t, err, "fraud")

	r = v.report(o.ID)
	require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
	require.Equal(t, []string{"shop.refund:resolved"}, undoStatuses(r))
	require.Equal(t, "refunded by hand, ticket 42", r.Steps[0].Note)
	_, refunds := v.ledger(o.ID)
	require.Equal(t, 0, refunds)
	require.Equal(t, 3, v.refundAttempts(o.ID))
	status, _, problem := v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
	require.Nil(t, problem)
}

func (v *env) refundAttempts(op string) int {
	v.t.Helper()
	var n int
	require.NoError(v.t, v.p.db.QueryRowContext(context.Background(), `SELECT count(*) FROM `+v.p.tbl("refund_attempts")+
		` WHERE idempotency_key LIKE $1 || '/%'`, op).Scan(&n))
	return n
}

func (v *env) refundKeys(op string) int {
	v.t.Helper()
	var n int
	require.NoError(v.t, v.p.db.QueryRowContext(context.Background(), `SELECT count(DISTINCT idempotency_key) FROM `+
		v.p.tbl("refund_attempts")+` WHERE idempotency_key LIKE $1 || '/%'`, op).Scan(&n))
	return n
}

func (v *env) refundID(op string) *int64 {
	v.t.Helper()
	var id int64
	require.NoError(v.t, v.p.db.QueryRowContext(context.Background(), `SELECT id FROM `+v.p.tbl("ledger")+
		` WHERE op = $1 AND kind = 'refund'`, op).Scan(&id))
	return &id
}

// An Action is one of the actions: anything else is refused when decoded,
// naming the value and the choices, and listed as an enumeration for the
// payload's JSON Schema.
func TestActionDecode(t *testing.T) {
	var a cancel.OperatorAction
	require.NoError(t, json.Unmarshal([]byte(`{"action":"resolve","step":"s1"}`), &a))
	require.Equal(t, cancel.ActionResolve, a.Action)
	err := json.Unmarshal([]byte(`{"action":"retyr"}`), &a)
	require.EqualError(t, err, `cancel: got action "retyr", want one of "retry", "resolve"`)
	require.Equal(t, []string{"retry", "resolve"}, cancel.ActionRetry.Enum())
}
