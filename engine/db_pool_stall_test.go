//go:build unix

package engine_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
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
	hold := dfHoldPool(ctx, t, db, admin, app, conns)

	close(gate) // the outcomes' commits wait for a connection
	testenv.Eventually(t, 60*time.Second, func() bool {
		return logs.count("engine: commit failed") > 0 && logs.count("engine: renewing the worker's roster row failed") > 0
	}, "a bounded statement waited for a pool connection past its bound")

	hold.release(t)
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, out)
	}
	t.Logf("commits failed %d times, roster renewals %d times while the pool was held",
		logs.count("engine: commit failed"), logs.count("engine: renewing the worker's roster row failed"))
	dfRequireOnce(t, &calls, n*3)
}

// dfPoolHold is dfHoldPool's lock and the statements waiting for it.
type dfPoolHold struct {
	lock *sql.Conn
	held chan error
	once sync.Once
}

// dfHoldPool has the admin session take advisory lock 4242 (and the
// locks more) and n statements of db, the pool of the connections named
// app, wait for 4242, each holding a connection. The locks go with
// release, at the latest at cleanup.
func dfHoldPool(ctx context.Context, t *testing.T, db, admin *sqlx.DB, app string, n int, more ...int) *dfPoolHold {
	t.Helper()
	lock, err := admin.Conn(ctx)
	require.NoError(t, err)
	h := &dfPoolHold{lock: lock, held: make(chan error, n)}
	t.Cleanup(h.unlock)
	for _, key := range append([]int{4242}, more...) {
		_, err = lock.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key)
		require.NoError(t, err)
	}
	for range n {
		go func() {
			_, err := db.ExecContext(context.Background(), `SELECT pg_advisory_xact_lock(4242)`)
			h.held <- err
		}()
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return dfWaitingFor(ctx, admin, app, 4242) == n },
		"the pool's connections never all waited for the lock")
	return h
}

// dfWaitingFor counts the statements of the connections named app that
// wait for advisory lock key (-1: the count failed).
func dfWaitingFor(ctx context.Context, admin *sqlx.DB, app string, key int) int {
	var n int
	if err := admin.GetContext(ctx, &n, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.objid = $2 AND NOT l.granted`, app, key); err != nil {
		return -1
	}
	return n
}

// unlock releases the admin session's locks.
func (h *dfPoolHold) unlock() {
	h.once.Do(func() {
		_, _ = h.lock.ExecContext(context.Background(), `SELECT pg_advisory_unlock_all()`)
		_ = h.lock.Close()
	})
}

// release releases the locks and waits for the statements that held the
// pool's connections.
func (h *dfPoolHold) release(t *testing.T) {
	t.Helper()
	h.unlock()
	for range cap(h.held) {
		require.NoError(t, <-h.held)
	}
}
