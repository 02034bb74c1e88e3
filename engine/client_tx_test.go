package engine_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A start in the caller's transaction exists only if the transaction
// commits; a commit wakes a worker at once (polling is off here, so only
// the notification sent at commit can reach it).
func TestStartTxCommitAndRollback(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("tx.echo", func(ctx engine.Context, in string) (string, error) { return "got " + in, nil })
	e, c := rbEnv(t, &engine.Config{PollInterval: time.Hour}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	db := e.DB()

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = wf.StartTx(ctx, c, tx, "a", &engine.StartOptions{ID: "tx-rolled-back"})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	_, err = c.Describe(ctx, "tx-rolled-back")
	require.ErrorIs(t, err, engine.ErrNotFound, "a rolled-back start leaves no run")

	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	run, err := wf.StartTx(ctx, c, tx, "b", &engine.StartOptions{ID: "tx-committed"})
	require.NoError(t, err)
	var visible int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM `+e.Schema()+`.runs WHERE workflow_id = 'tx-committed'`).Scan(&visible))
	require.Zero(t, visible, "the run is invisible before the caller commits")
	require.NoError(t, tx.Commit())
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "got b", out)
}

// StartManyTx reports a refused start in its result and keeps the others
// and the transaction; ConflictUseExisting returns the open run.
func TestStartManyTxPartialRefusal(t *testing.T) {
	t.Parallel()
	wf := rbGateWorkflow("tx.gate")
	e, c := rbEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	first, err := wf.Start(ctx, c, "first", &engine.StartOptions{ID: "dup"})
	require.NoError(t, err)

	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	res, err := c.StartManyTx(ctx, tx, []engine.StartManyParams{
		{Workflow: "tx.gate", Input: []byte(`"ok"`), Options: &engine.StartOptions{ID: "new-1"}},
		{Workflow: "tx.gate", Input: []byte(`"x"`), Options: &engine.StartOptions{ID: "dup"}},
		{Workflow: "tx.gate", Input: []byte(`{"not":"a string"}`), Options: &engine.StartOptions{ID: "bad-input"}},
		{Workflow: "tx.nope", Input: []byte(`"x"`), Options: &engine.StartOptions{ID: "unknown"}},
		{Workflow: "tx.gate", Input: []byte(`"x"`), Options: &engine.StartOptions{ID: "dup", ConflictPolicy: engine.ConflictUseExisting}},
	})
	require.NoError(t, err)
	require.NoError(t, res[0].Err)
	require.ErrorIs(t, res[1].Err, engine.ErrAlreadyStarted)
	require.Error(t, res[2].Err)
	require.ErrorIs(t, res[3].Err, engine.ErrUnknownWorkflow)
	require.NoError(t, res[4].Err)
	require.Equal(t, first.RunID, res[4].Run.RunID)
	require.NoError(t, tx.Commit())

	rbWaitStatus(t, c, "new-1", engine.StatusRunning)
	for _, id := range []string{"bad-input", "unknown"} {
		_, err := c.Describe(ctx, id)
		require.ErrorIs(t, err, engine.ErrNotFound, id)
	}
}

// SignalTx and CancelTx take effect only when the caller commits.
func TestSignalAndCancelTx(t *testing.T) {
	t.Parallel()
	wf := rbGateWorkflow("tx.signal")
	e, c := rbEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	inTx := func(f func(tx *sql.Tx) error, commit bool) {
		tx, err := e.DB().BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, f(tx))
		if commit {
			require.NoError(t, tx.Commit())
		} else {
			require.NoError(t, tx.Rollback())
		}
	}
	run, err := wf.Start(ctx, c, "sig", &engine.StartOptions{ID: "sig"})
	require.NoError(t, err)
	rbWaitStatus(t, c, "sig", engine.StatusWaiting)
	inTx(func(tx *sql.Tx) error { return c.SignalTx(ctx, tx, "sig", "go", struct{}{}) }, false)
	inTx(func(tx *sql.Tx) error { return c.CancelTx(ctx, tx, "sig", "rolled back") }, false)
	info, err := c.Describe(ctx, "sig")
	require.NoError(t, err)
	require.False(t, info.CancelRequested, "a rolled-back cancel requests nothing")
	inTx(func(tx *sql.Tx) error { return c.SignalTx(ctx, tx, "sig", "go", struct{}{}) }, true)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "sig", out)

	_, err = wf.Start(ctx, c, "c", &engine.StartOptions{ID: "cancel-me"})
	require.NoError(t, err)
	inTx(func(tx *sql.Tx) error { return c.CancelTx(ctx, tx, "cancel-me", "asked") }, true)
	rbWaitStatus(t, c, "cancel-me", engine.StatusCancelled)
	err = c.SignalTx(ctx, nil, "cancel-me", "go", nil)
	require.Error(t, err)
}

// A reset in the caller's transaction makes its new run only if the
// transaction commits; the new run re-executes from the cut.
func TestResetTx(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	step := engine.NewActivity("tx.reset.step", func(_ context.Context, in string) (string, error) {
		if fail.Load() {
			return "", engine.NewNonRetryableError("Boom", "boom", nil)
		}
		return "ok " + in, nil
	})
	wf := engine.NewWorkflow("tx.reset", func(ctx engine.Context, in string) (string, error) { return step.Run(ctx, in) })
	e, c := rbEnv(t, nil, step, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf.Start(ctx, c, "x", &engine.StartOptions{ID: "reset-tx"})
	require.NoError(t, err)
	first := rbWaitStatus(t, c, "reset-tx", engine.StatusFailed)

	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = c.ResetTx(ctx, tx, "reset-tx", engine.ResetOptions{BeforeLastFailedActivity: true})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	info, err := c.Describe(ctx, "reset-tx")
	require.NoError(t, err)
	require.Equal(t, first.RunID, info.RunID, "a rolled-back reset makes no run")

	fail.Store(false)
	tx, err = e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	h, err := c.ResetTx(ctx, tx, "reset-tx", engine.ResetOptions{BeforeLastFailedActivity: true})
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	done := rbWaitStatus(t, c, "reset-tx", engine.StatusCompleted)
	require.Equal(t, h.RunID, done.RunID)
	_, err = c.ResetTx(ctx, nil, "reset-tx", engine.ResetOptions{BeforeLastFailedActivity: true})
	require.Error(t, err)
}
