//go:build unix

package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Every connection of the engine's pool is held by a statement that
// waits, with no deadline, for a lock another session holds (a caller's
// statement on the shared pool, stuck behind a stalled backend): the
// engine's statements that are bounded by CommitTimeout (the commits of
// the activities' outcomes, the roster renewal) must give up waiting for a
// connection when their bound passes, and say so, rather than wait for as
// long as the pool stays full. Once the lock goes, every run completes
// and no activity runs twice.
func TestStalledPoolDoesNotHoldBoundedStatements(t *testing.T) {
	t.Parallel()
	app := "stalledpool"
	const conns = 2
	st := dfStallEngine(t, app, conns, time.Second, time.Minute)
	db, admin, logs, e := st.db, st.admin, st.logs, st.e

	var calls ftCounter
	gate := make(chan struct{})
	act, wf := dfWorkflow("df.stallpool", 3, &calls, gate, 1)
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 150*time.Second)
	logs.dumpIfFailed(t)

	const n = 3
	runs := dfStartGated(ctx, t, e, wf, &calls, "p", n)

	// The admin session takes the lock; conns statements of the pool wait
	// for it, each holding a connection.
	lock, err := admin.Conn(ctx)
	require.NoError(t, err)
	_, err = lock.ExecContext(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			_, _ = lock.ExecContext(context.Background(), `SELECT pg_advisory_unlock_all()`)
			_ = lock.Close()
		})
	}
	t.Cleanup(unlock)
	held := make(chan error, conns)
	for range conns {
		go func() {
			_, err := db.ExecContext(context.Background(), `SELECT pg_advisory_xact_lock(4242)`)
			held <- err
		}()
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		var waiting int
		err := admin.GetContext(ctx, &waiting, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, app)
		return err == nil && waiting == conns
	}, "the pool's connections never all waited for the lock")

	close(gate) // the outcomes' commits wait for a connection
	testenv.Eventually(t, 60*time.Second, func() bool {
		return logs.count("engine: commit failed") > 0 && logs.count("engine: renewing the worker's roster row failed") > 0
	}, "a bounded statement waited for a pool connection past its bound")

	unlock()
	for range conns {
		require.NoError(t, <-held)
	}
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, out)
	}
	t.Logf("commits failed %d times, roster renewals %d times while the pool was held",
		logs.count("engine: commit failed"), logs.count("engine: renewing the worker's roster row failed"))
	dfRequireOnce(t, &calls, n*3)
}
