package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// ResetManyTx resets each workflow as ResetTx would: failed runs from
// before their failed step (the steps before it are reused, not run
// again), an open run closed as "reset" and made again, an unknown ID and
// one a client interceptor refuses reported in their results while the
// others go on; nothing exists before the commit, and a rollback leaves no
// trace.
func TestResetManyTx(t *testing.T) {
	t.Parallel()
	r := newFTRenewal("rmany")
	gate := engine.NewWorkflow("rmany.gate", func(ctx engine.Context, _ struct{}) (string, error) {
		if _, err := r.charge.Run(ctx, "gate"); err != nil {
			return "", err
		}
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	var seen []string
	refuse := engine.ClientInterceptorFunc(func(ctx context.Context, in *engine.ClientCallInput, next engine.ClientNext) (any, error) {
		if in.Kind == engine.ClientReset {
			seen = append(seen, in.WorkflowID)
			if in.WorkflowID == "refused" {
				return nil, errors.New("refused by policy")
			}
		}
		return next(ctx, in)
	})
	e, c := ftEnv(t, &engine.Config{Interceptors: []engine.Interceptor{refuse}}, append(r.defs(), gate)...)
	ctx := testenv.Ctx(t, 30*time.Second)
	failed := []string{"m-3", "m-1", "m-2", "refused"}
	for _, id := range failed {
		run, err := r.wf.Start(ctx, c, id+".com", &engine.StartOptions{ID: id})
		require.NoError(t, err)
		_, err = run.Result(ctx)
		require.Equal(t, "CardDeclined", ftAppErr(t, err).Type)
	}
	r.fixed.Store(true) // the cause is fixed; the gate's charge succeeds
	open, err := gate.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "open"})
	require.NoError(t, err)
	ftWaitStatus(t, c, "open", engine.StatusWaiting)
	ids := append(append([]string{}, failed...), "open", "ghost")
	opts := engine.ResetOptions{BeforeStep: "rmany.charge", Reason: "card fixed"}

	// Rolled back: no new run, and the old ones are as they were.
	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = c.ResetManyTx(ctx, tx, ids, opts)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	for _, id := range failed {
		hist, err := c.History(ctx, id)
		require.NoError(t, err)
		require.Len(t, hist, 1, id)
	}
	require.Equal(t, open.RunID, ftDescribe(t, c, "open").RunID)

	seen = nil
	tx, err = e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	res, err := c.ResetManyTx(ctx, tx, ids, opts)
	require.NoError(t, err)
	require.Equal(t, ids, seen, "the client chain sees each reset, in the caller's order")
	require.Len(t, res, len(ids))
	require.ErrorContains(t, res[3].Err, "refused by policy")
	require.Nil(t, res[3].Run)
	require.ErrorIs(t, res[5].Err, engine.ErrNotFound)
	require.Nil(t, res[5].Run)
	var visible int
	require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT count(*) FROM `+e.Schema()+`.runs WHERE start_reason = 'reset'`).Scan(&visible))
	require.Zero(t, visible, "the new runs are invisible before the caller commits")
	require.NoError(t, tx.Commit())

	for i, id := range []string{"m-3", "m-1", "m-2"} {
		require.NoError(t, res[i].Err, id)
		require.Equal(t, id, res[i].Run.WorkflowID)
		out, err := res[i].Run.Result(ctx)
		require.NoError(t, err, id)
		require.JSONEq(t, `"reserved `+id+`.com, charged `+id+`.com, confirmed `+id+`.com"`, string(out))
		hist, err := c.History(ctx, id)
		require.NoError(t, err)
		require.Len(t, hist, 2)
		require.Equal(t, "reset", hist[1].Run.StartReason)
		require.Equal(t, "card fixed", hist[1].Run.ResetReason)
		require.Equal(t, hist[0].Run.RunID, hist[1].Run.PreviousRunID)
		require.Equal(t, hist[0].Steps[0].CompletedAt, hist[1].Steps[0].CompletedAt, "the step before the cut is the reused record")
	}
	require.Equal(t, 4, r.calls.get("reserve"), "no step before the reset point runs again")
	hist, err := c.History(ctx, "refused")
	require.NoError(t, err)
	require.Len(t, hist, 1, "a refused reset makes no run")

	// The open run was closed as reset; its new run charges again and
	// waits for the signal.
	require.NoError(t, res[4].Err)
	require.NotEqual(t, open.RunID, res[4].Run.RunID)
	require.NoError(t, c.Signal(ctx, "open", "go", "went"))
	out, err := res[4].Run.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"went"`, string(out))
	hist, err = c.History(ctx, "open")
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, engine.StatusReset, hist[0].Run.Status)
}

// ResetManyTx refuses what cannot be meant (an ID twice, options that name
// no single reset point, no transaction), and a reset point the latest run
// lacks is that reset's ErrNotFound, as for ResetTx.
func TestResetManyTxRefusals(t *testing.T) {
	t.Parallel()
	r := newFTRenewal("rmany2")
	r.fixed.Store(true)
	e, c := ftEnv(t, nil, r.defs()...)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := r.wf.Start(ctx, c, "ok.org", &engine.StartOptions{ID: "done"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)

	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = c.ResetManyTx(ctx, tx, []string{"done", "x", "done"}, engine.ResetOptions{BeforeSeq: 1})
	require.ErrorContains(t, err, `"done" is given twice`)
	_, err = c.ResetManyTx(ctx, tx, []string{"done"}, engine.ResetOptions{})
	require.Error(t, err)
	_, err = c.ResetManyTx(ctx, nil, []string{"done"}, engine.ResetOptions{BeforeSeq: 1})
	require.Error(t, err)
	res, err := c.ResetManyTx(ctx, tx, []string{"done"}, engine.ResetOptions{BeforeLastFailedActivity: true})
	require.NoError(t, err)
	require.ErrorIs(t, res[0].Err, engine.ErrNotFound)
	require.True(t, strings.Contains(res[0].Err.Error(), "no step matching"), res[0].Err)
	res, err = c.ResetManyTx(ctx, tx, nil, engine.ResetOptions{BeforeSeq: 1})
	require.NoError(t, err)
	require.Empty(t, res)
	require.NoError(t, tx.Commit())
	hist, err := c.History(ctx, "done")
	require.NoError(t, err)
	require.Len(t, hist, 1)
}

// ResetManyTx in a transaction of the caller's own pool (not the engine's):
// its statement, prepared on the engine's pool, runs unprepared there.
func TestResetManyTxInAnotherPool(t *testing.T) {
	t.Parallel()
	r := newFTRenewal("rmany3")
	_, c := ftEnv(t, nil, r.defs()...)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := r.wf.Start(ctx, c, "other.org", &engine.StartOptions{ID: "other"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.Equal(t, "CardDeclined", ftAppErr(t, err).Type)
	r.fixed.Store(true)
	pool, err := engine.OpenDB(testenv.DatabaseURL())
	require.NoError(t, err)
	defer pool.Close()
	tx, err := pool.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	res, err := c.ResetManyTx(ctx, tx, []string{"other"}, engine.ResetOptions{BeforeLastFailedActivity: true, Reason: "card fixed"})
	require.NoError(t, err)
	require.NoError(t, res[0].Err)
	require.NoError(t, tx.Commit())
	out, err := res[0].Run.Result(ctx)
	require.NoError(t, err)
	require.Contains(t, string(out), "charged other.org")
}
