//go:build unix

package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A COMMIT stalls mid-flight and then its connection dies: the server has
// written the commit to its WAL but waits (for a synchronous standby that
// never answers) before making it visible, and while it waits its backend
// stops (SIGSTOP), as on a hung host, so it answers neither the
// cancellation nor the termination that follow, and its connection is
// given up. The read-back cannot see that commit yet and takes it for not
// committed; the commit lands once the backend resumes. What keeps that
// guess harmless is that the stalled transaction still holds the rows it
// wrote: writing the batch again, giving its runs back and starting a new
// attempt of their activities (which records the attempt first) all wait
// for it or are refused, so no run is resumed from a record without it.
// Every run completes, each activity ran once, every step is recorded.
func TestCommitStalledMidFlightIsNotGuessed(t *testing.T) {
	t.Parallel()
	app := "midcommit"
	st := dfStallEngine(t, app, 6, 2*time.Second, 2*time.Minute)
	admin, logs, e := st.admin, st.logs, st.e

	var calls ftCounter
	gate := make(chan struct{})
	act, wf := dfWorkflow("df.midcommit", 4, &calls, gate, 2)
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 180*time.Second)
	logs.dumpIfFailed(t)

	const n = 3
	runs := dfStartGated(ctx, t, e, wf, &calls, "m", n)

	// From now on a commit waits, once in the WAL and before it is visible,
	// for a synchronous standby that does not exist.
	syncRep := func(on bool) {
		stmts := []string{`ALTER SYSTEM RESET synchronous_standby_names`, `ALTER SYSTEM RESET synchronous_commit`}
		if on {
			stmts = []string{`ALTER SYSTEM SET synchronous_standby_names = 'ghost'`, `ALTER SYSTEM SET synchronous_commit = 'on'`}
		}
		for _, q := range append(stmts, `SELECT pg_reload_conf()`) {
			_, err := admin.ExecContext(ctx, q)
			require.NoError(t, err)
		}
	}
	_, err := admin.ExecContext(ctx, `CREATE TABLE standby_probe (x int)`)
	require.NoError(t, err)
	syncRep(true)
	dfAwaitSyncRep(ctx, t, admin)

	close(gate) // the outcomes' commit stalls
	var pids []int
	testenv.Eventually(t, 30*time.Second, func() bool {
		pids = nil
		err := admin.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event = 'SyncRep' AND backend_xid IS NOT NULL`, app)
		return err == nil && len(pids) > 0
	}, "no commit of the engine waited for the standby")
	resume := dfStopBackends(t, pids)
	// Other commits go through again; the stopped backends' stay pending.
	syncRep(false)

	// The stalled commit's connection is given up (it answers no
	// cancellation), and its outcome stays unknown for a while: long enough
	// for the engine to have retried the write and, were it guessing,
	// resumed its runs from a record without it.
	testenv.Eventually(t, 90*time.Second, func() bool {
		calls.mu.Lock()
		defer calls.mu.Unlock()
		for k, v := range calls.n {
			if k != "gated" && v > 1 {
				return true // an activity ran again: fails below
			}
		}
		return logs.count("engine: commit outcome unknown")+logs.count("engine: commit failed") >= 6
	}, "the stalled commit was neither waited for nor retried")
	resume()

	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 4, out)
	}
	t.Logf("%d backends stopped mid-commit; %d read-backs waited; %d commits retried", len(pids),
		logs.count("engine: commit outcome unknown"), logs.count("engine: commit failed"))
	dfRequireOnce(t, &calls, n*4)
	for _, run := range runs {
		h, err := e.Client().History(ctx, run.WorkflowID)
		require.NoError(t, err)
		require.Len(t, h, 1)
		require.Equal(t, engine.StatusCompleted, h[0].Run.Status)
		require.Len(t, h[0].Steps, 4)
		for _, st := range h[0].Steps {
			require.Equal(t, "completed", st.Status, "run %s step %d", run.WorkflowID, st.Seq)
		}
	}
}

// dfAwaitSyncRep waits until a commit waits for the synchronous standby.
// The admin session's SHOW tells only that it has reloaded the
// configuration: a commit waits once the checkpointer has reloaded it too
// (it tells the other backends that a standby is named), which on a busy
// machine comes later; a commit before that goes through. So a probe row
// is written until its commit is seen waiting, and that commit is then
// cancelled (PostgreSQL commits it locally).
func dfAwaitSyncRep(ctx context.Context, t *testing.T, admin *sqlx.DB) {
	t.Helper()
	conn, err := admin.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	var done chan error
	testenv.Eventually(t, 30*time.Second, func() bool {
		if done == nil {
			done = make(chan error, 1)
			go func() { _, err := conn.ExecContext(ctx, `INSERT INTO standby_probe VALUES (1)`); done <- err }()
		}
		var waiting bool
		require.NoError(t, admin.GetContext(ctx, &waiting, `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE pid = $1 AND wait_event = 'SyncRep'`, pid))
		if waiting {
			return true
		}
		select {
		case err := <-done: // committed without waiting: write again
			require.NoError(t, err)
			done = nil
		default:
		}
		return false
	}, "no commit waited for the standby")
	_, err = admin.ExecContext(ctx, `SELECT pg_cancel_backend($1)`, pid)
	require.NoError(t, err)
	require.NoError(t, <-done)
}
