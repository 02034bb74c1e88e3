package graftsync_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	graftsync "github.com/graftdev/graft/sync"
)

// TestMirrorsEveryColumn runs a renewal to its end and checks every column
// the mapping names, and that the columns it does not name are untouched.
func TestMirrorsEveryColumn(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	before, _ := ev.row("op-1")
	out, err := ev.result(ev.start("op-1", renewal{Domain: "example.com", Years: 2, ChargeFailures: 2}, nil))
	require.NoError(t, err)
	require.Equal(t, "R-example.com", out)

	r := ev.waitStatus("op-1", "done")
	require.Equal(t, "registering", r.Step.String)
	require.Equal(t, 1, r.Attempts, "attempts of the last activity (register)")
	require.False(t, r.LastError.Valid)
	require.Equal(t, 100.0, r.Progress.Float64)
	require.Equal(t, time.Date(2032, 3, 1, 0, 0, 0, 0, time.UTC), r.ExpiresAt.Time.UTC())
	require.Equal(t, "R-example.com", r.Ref.String)
	require.False(t, r.UpdatedAt.Before(before.UpdatedAt))
	// Columns the mapping does not name are the legacy application's.
	require.Equal(t, "renewal", r.Kind)
	require.Equal(t, "acme", r.Customer.String)
	require.False(t, r.RowVersion.Valid)
	_, state, ok := ev.state("op-1")
	require.True(t, ok)
	require.Equal(t, "completed", state)
}

// TestStatusFollowsTheWorkflow walks a row through pending, waiting,
// running and completed, and checks the attempts and progress on the way.
func TestStatusFollowsTheWorkflow(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{noWorker: true})
	ev.insertRow("op-1")
	ev.exec(`UPDATE `+ev.qtable()+` SET status = 'imported', last_error = 'old failure' WHERE id = $1`, "op-1")

	run := ev.start("op-1", renewal{Domain: "a.com", Years: 1, Confirm: true, ChargeFailures: 1}, nil)
	r := ev.waitStatus("op-1", "todo")
	require.False(t, r.LastError.Valid, "a start clears the last error (ClearOnSuccess)")
	require.False(t, r.Step.Valid)

	grafttest.StartWorker(t, ev.e, engine.WorkerConfig{})
	ev.waitEngine("op-1", engine.StatusWaiting)
	r = ev.waitStatus("op-1", "waiting")
	require.False(t, r.Step.Valid, "no activity yet")

	require.NoError(t, ev.c.Signal(context.Background(), "op-1", "confirm", true))
	_, err := ev.result(run)
	require.NoError(t, err)
	r = ev.waitStatus("op-1", "done")
	require.Equal(t, "registering", r.Step.String)
	require.Equal(t, 100.0, r.Progress.Float64)
}

// TestFailureShowsTheError checks the failed status, the step that failed
// and the error, cut to the column's 60 characters.
func TestFailureShowsTheError(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a-domain-with-a-rather-long-name.example.com", Fatal: true}, nil))
	require.Error(t, err)
	r := ev.waitStatus("op-1", "error")
	require.Equal(t, "charging", r.Step.String)
	require.Equal(t, 1, r.Attempts)
	require.Equal(t, 25.0, r.Progress.Float64, "progress of the last completed activity (check)")
	require.True(t, strings.HasPrefix(r.LastError.String, "CardDeclined: card declined for a-domain"), r.LastError.String)
	require.Len(t, []rune(r.LastError.String), 60)
}

// TestNeedsOperator: a NeedsOperator failure shows as "problem", and stays
// so while the workflow waits (unloaded) for the operator's signal; the
// signal moves it on.
func TestNeedsOperator(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	run := ev.start("op-1", renewal{Domain: "a.com", Operator: true}, nil)
	r := ev.waitStatus("op-1", "problem")
	require.Equal(t, "NeedsOperator: registry account suspended", r.LastError.String)
	require.Equal(t, "charging", r.Step.String)

	ev.waitEngine("op-1", engine.StatusWaiting)
	_, state, _ := ev.state("op-1")
	require.Equal(t, "needs_operator", state, "a wait does not end needs_operator")
	r, _ = ev.row("op-1")
	require.Equal(t, "problem", r.Status)

	require.NoError(t, ev.c.Signal(context.Background(), "op-1", "fixed", graftsync.Request{}))
	_, err := ev.result(run)
	require.NoError(t, err)
	r = ev.waitStatus("op-1", "done")
	require.False(t, r.LastError.Valid)
}

// TestCancelFromTheClient: a cancelled workflow shows as cancelled, with the
// reason.
func TestCancelFromTheClient(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	run := ev.start("op-1", renewal{Domain: "a.com", Confirm: true}, nil)
	ev.waitStatus("op-1", "waiting")
	require.NoError(t, ev.c.Cancel(context.Background(), "op-1", "customer changed their mind"))
	_, err := ev.result(run)
	var ce *engine.CanceledError
	require.ErrorAs(t, err, &ce)
	r := ev.waitStatus("op-1", "cancelled")
	require.Contains(t, r.LastError.String, "customer changed their mind")
}

// TestKeySources derives the row key from a header and from an input field,
// for workflows whose ID is something else.
func TestKeySources(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		key  graftsync.Key
		opts *engine.StartOptions
	}{
		{"header", graftsync.Key{Column: "id", From: graftsync.FromHeader, Name: "operation-id"},
			&engine.StartOptions{Headers: engine.Headers{"operation-id": "op-7"}}},
		{"input", graftsync.Key{Column: "id", From: graftsync.FromInput, Name: "order.id"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := newEnv(t, envOpts{mapping: func(table string) graftsync.Mapping {
				m := fullMapping(table)
				m.Key = tc.key
				return m
			}})
			ev.insertRow("op-7")
			in := renewal{Domain: "a.com", Years: 1, Confirm: true}
			in.Order.ID = "op-7"
			run := ev.start("renewal-of-a.com", in, tc.opts)
			// The wait unloads the run; it is loaded again on the signal,
			// so the input key is found again after a fresh load.
			ev.waitStatus("op-7", "waiting")
			require.NoError(t, ev.c.Signal(context.Background(), "renewal-of-a.com", "confirm", true))
			_, err := ev.result(run)
			require.NoError(t, err)
			r := ev.waitStatus("op-7", "done")
			require.Equal(t, "R-a.com", r.Ref.String)
			_, found := ev.row("renewal-of-a.com")
			require.False(t, found)
		})
	}
}

// TestOtherWorkflowTypesAreNotMirrored: the mapping names "renewal" only.
func TestOtherWorkflowTypesAreNotMirrored(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	run, err := otherWf.Start(context.Background(), ev.c, renewal{Domain: "a.com"}, &engine.StartOptions{ID: "op-1"})
	require.NoError(t, err)
	_, err = run.Result(grafttest.Context(t, 20*time.Second))
	require.NoError(t, err)
	r, _ := ev.row("op-1")
	require.Equal(t, "todo", r.Status)
	require.False(t, r.Step.Valid)
	_, _, ok := ev.state("op-1")
	require.False(t, ok)
}

// TestVersionColumn: with a version column the row carries each change's
// position and is the guard (graft keeps no mirror_state); a row whose
// version is ahead is left alone (the legacy application's optimistic
// locking sees graft's writes, and graft sees its); a wait leaves a row that
// needs an operator showing so, as the row's status tells.
func TestVersionColumn(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: guarded("version", nil)})
	ev.insertRow("op-1")
	ev.insertRow("op-2")
	ev.insertRow("op-3")
	run := ev.start("op-1", renewal{Domain: "a.com", Confirm: true}, nil)
	r := ev.waitStatus("op-1", "waiting")
	require.True(t, r.RowVersion.Valid)
	v1 := r.RowVersion.Int64
	_, _, ok := ev.state("op-1")
	require.False(t, ok, "no mirror_state")
	require.NoError(t, ev.c.Signal(context.Background(), "op-1", "confirm", true))
	_, err := ev.result(run)
	require.NoError(t, err)
	r = ev.waitStatus("op-1", "done")
	require.Greater(t, r.RowVersion.Int64, v1)

	// A version ahead of graft's positions stops graft's writes.
	ev.exec(`UPDATE ` + ev.qtable() + ` SET row_version = 9000000000000000000 WHERE id = 'op-2'`)
	_, err = ev.result(ev.start("op-2", renewal{Domain: "b.com"}, nil))
	require.NoError(t, err)
	ev.waitEngine("op-2", engine.StatusCompleted)
	r, _ = ev.row("op-2")
	require.Equal(t, "todo", r.Status)

	// Needs an operator, and stays so while unloaded.
	run = ev.start("op-3", renewal{Domain: "c.com", Operator: true}, nil)
	ev.waitStatus("op-3", "problem")
	ev.waitEngine("op-3", engine.StatusWaiting)
	r, _ = ev.row("op-3")
	require.Equal(t, "problem", r.Status)
	require.NoError(t, ev.c.Signal(context.Background(), "op-3", "fixed", graftsync.Request{}))
	_, err = ev.result(run)
	require.NoError(t, err)
	ev.waitStatus("op-3", "done")
}

// TestResetMirrorsTheNewRun: a failed renewal is reset after the cause is
// fixed; the new run's changes (whose step numbers start below the old
// run's last) move the row on.
func TestResetMirrorsTheNewRun(t *testing.T) {
	t.Parallel()
	_, r := resetAfterFailure(t, newEnv(t, envOpts{}), "op-reset")
	require.Equal(t, "registering", r.Step.String)
	require.False(t, r.LastError.Valid)
}

// TestResetKeepsTheErrorWithoutClearOnSuccess: without clear_on_success
// the error column keeps the failed run's error after a successful
// relaunch (the README says so).
func TestResetKeepsTheErrorWithoutClearOnSuccess(t *testing.T) {
	t.Parallel()
	failed, r := resetAfterFailure(t, newEnv(t, envOpts{mapping: func(table string) graftsync.Mapping {
		m := fullMapping(table)
		m.Error.ClearOnSuccess = false
		return m
	}}), "op-keep")
	require.True(t, failed.LastError.Valid)
	require.Equal(t, failed.LastError.String, r.LastError.String, "the old error stays")
}

// resetAfterFailure fails a renewal of a new row named name, resets it
// once the cause is fixed, and returns its row when it failed and when the
// new run is done.
func resetAfterFailure(t *testing.T, ev *env, name string) (failed, done *opRow) {
	t.Helper()
	ev.insertRow(name)
	id := ev.legacy + "-" + name // a workflow ID no other test uses
	ev.exec(`UPDATE `+ev.qtable()+` SET id = $1 WHERE id = $2`, id, name)
	_, err := ev.result(ev.start(id, renewal{Domain: "a.com", Fatal: true}, nil))
	require.Error(t, err)
	failed = ev.waitStatus(id, "error")
	healedIDs.Store(id, true)
	h, err := ev.c.Reset(context.Background(), id, engine.ResetOptions{BeforeLastFailedActivity: true})
	require.NoError(t, err)
	_, err = h.Result(grafttest.Context(t, 20*time.Second))
	require.NoError(t, err)
	return failed, ev.waitStatus(id, "done")
}

// TestExtraFuncErrorDoesNotBlock: an extra column whose function fails is
// left as it is; the rest of the row and the workflow carry on.
func TestExtraFuncErrorDoesNotBlock(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{
		mapping: func(table string) graftsync.Mapping {
			m := fullMapping(table)
			m.Extra[0].Func = "broken"
			return m
		},
		config: func(c *graftsync.Config) {
			c.Funcs = map[string]graftsync.ExtraFunc{"broken": func(*engine.CheckpointEvent) (any, error) {
				return nil, errors.New("no expiry in this result")
			}}
		},
	})
	ev.insertRow("op-1")
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com"}, nil))
	require.NoError(t, err)
	r := ev.waitStatus("op-1", "done")
	require.False(t, r.ExpiresAt.Valid)
	require.Equal(t, "R-a.com", r.Ref.String)
}

// TestPurgeClosed removes the state of ended runs only.
func TestPurgeClosed(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	ev.insertRow("op-2")
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com"}, nil))
	require.NoError(t, err)
	ev.start("op-2", renewal{Domain: "b.com", Confirm: true}, nil)
	ev.waitStatus("op-1", "done")
	ev.waitStatus("op-2", "waiting")
	n, err := ev.mr.PurgeClosed(context.Background(), time.Now().Add(time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, _, ok := ev.state("op-1")
	require.False(t, ok)
	_, _, ok = ev.state("op-2")
	require.True(t, ok)
}

// TestMirrorOnItsOwnPool: a Config.DB other than the engine's pool still
// works (the mirror cannot use its prepared statements in the engine's
// transactions, and sends plain queries instead).
func TestMirrorOnItsOwnPool(t *testing.T) {
	t.Parallel()
	own, err := sqlx.Open("postgres", grafttest.DatabaseURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = own.Close() })
	ev := newEnv(t, envOpts{config: func(c *graftsync.Config) { c.DB = own }})
	ev.insertRow("op-1")
	_, err = ev.result(ev.start("op-1", renewal{Domain: "a.com"}, nil))
	require.NoError(t, err)
	ev.waitStatus("op-1", "done")
}

// TestUnchangedRowIsNotWritten: a change that alters no mapped column (a
// start on a row that already shows "todo") writes nothing, not even the
// updated-at time.
func TestUnchangedRowIsNotWritten(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{noWorker: true})
	ev.insertRow("op-1")
	ev.exec(`UPDATE ` + ev.qtable() + ` SET updated_at = '2020-01-01T00:00:00Z' WHERE id = 'op-1'`)
	ev.start("op-1", renewal{Domain: "a.com"}, nil)
	_, state, ok := ev.state("op-1")
	require.True(t, ok, "the start was mirrored")
	require.Equal(t, "pending", state)
	r, _ := ev.row("op-1")
	require.Equal(t, "todo", r.Status)
	require.Equal(t, 2020, r.UpdatedAt.UTC().Year(), "not written")

	grafttest.StartWorker(t, ev.e, engine.WorkerConfig{})
	r = ev.waitStatus("op-1", "done")
	require.Greater(t, r.UpdatedAt.UTC().Year(), 2020)
}

// TestFoldsWhenItCannotRefuse: with a version column the mirror writes
// inside the engine's commit statement (engine.CheckpointFolder), which
// TestVersionColumn and TestRefusedRowIsRetriedAlone exercise; with
// mirror_state (two statements), or under MissingFail (which may refuse a
// checkpoint, and a folded write cannot), it declines and Checkpoint writes
// in the transaction.
func TestFoldsWhenItCannotRefuse(t *testing.T) {
	t.Parallel()
	evs := []*engine.CheckpointEvent{{Kind: engine.CheckpointWorkflowStarted, WorkflowID: "op-1", RunID: "run-1",
		WorkflowType: "renewal", Status: engine.StatusRunning, Input: renewal{Domain: "a.com"}, At: time.Now()}}
	for _, tc := range []struct {
		name    string
		mapping func(string) graftsync.Mapping
		folds   bool
	}{
		{"version", guarded("version", nil), true},
		{"mirror_state", guarded("mirror_state", nil), false},
		{"version, MissingFail", guarded("version", withMissing(graftsync.MissingFail)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := newEnv(t, envOpts{mapping: tc.mapping, noWorker: true})
			fold, ok := ev.mr.FoldCheckpoint(context.Background(), evs)
			require.Equal(t, tc.folds, ok)
			if tc.folds {
				require.NotNil(t, fold)
				require.Contains(t, fold.Func, "graftsync_fold_")
			}
		})
	}
}
