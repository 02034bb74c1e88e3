package pgconn_test

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgconn"
	"github.com/graftdev/graft/internal/testenv"
)

// openOne opens a pool of one connection through a Connector.
func openOne(t *testing.T) *sql.DB {
	t.Helper()
	c, err := pgconn.NewConnector(testenv.DatabaseURL())
	require.NoError(t, err)
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	require.True(t, pgconn.Guards(db.Driver()))
	return db
}

// requirePoolWaitEnds runs call, which waits for the pool's only
// connection (held: release frees it), and requires it to fail, under
// ctx, at ctx's deadline, having sent nothing. A call still waiting after
// 30 seconds fails the test with msg (release runs first).
func requirePoolWaitEnds(t *testing.T, ctx context.Context, call func() error, release func() error, msg string) {
	t.Helper()
	waited := make(chan error, 1)
	go func() { waited <- call() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		require.NoError(t, release())
		t.Fatal(msg)
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, pgconn.Unsent(ctx, err), "the call sent nothing")
	require.NoError(t, release())
}

// A statement still running at its WithDeadline deadline is cancelled by
// the server, as lib/pq cancels one whose context ends; the connection
// stays in the pool (lib/pq was not given the context's end: a connection
// it cancels a statement on is closed), and the deadline does not follow
// it into the next statements, prepared or not, inside a transaction or
// not.
func TestWithDeadlineCancelsTheStatement(t *testing.T) {
	t.Parallel()
	db := openOne(t)
	var pid, pid2 int
	require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))

	start := time.Now()
	ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(300*time.Millisecond))
	defer cancel()
	_, err := db.ExecContext(ctx, `SELECT pg_sleep(30)`)
	require.False(t, pgconn.Unsent(ctx, err), "the statement was sent")
	var pe *pq.Error
	require.True(t, errors.As(err, &pe), "want the server's cancellation, got %v", err)
	require.EqualValues(t, "57014", pe.Code)
	require.Less(t, time.Since(start), 10*time.Second)

	// The same connection, past the deadline: nothing of it is left.
	require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid2))
	require.Equal(t, pid, pid2, "the connection was kept")
	_, err = db.Exec(`SELECT pg_sleep(0.5)`)
	require.NoError(t, err)
	st, err := db.Prepare(`SELECT $1::int + 1`)
	require.NoError(t, err)
	ctx, cancel = pgconn.WithDeadline(context.Background(), time.Now().Add(200*time.Millisecond))
	defer cancel()
	var v int
	require.NoError(t, st.QueryRowContext(ctx, 1).Scan(&v))
	require.Equal(t, 2, v)
	time.Sleep(300 * time.Millisecond) // past that deadline, on an idle connection
	require.NoError(t, st.QueryRow(2).Scan(&v))
	require.Equal(t, 3, v)
	require.NoError(t, st.Close())

	// A transaction keeps its deadline for its statements and its COMMIT.
	ctx, cancel = pgconn.WithDeadline(context.Background(), time.Now().Add(5*time.Second))
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT 1`).Scan(&v))
	require.NoError(t, tx.Commit())
	// A transaction still open at its deadline is the connection's to end,
	// not database/sql's (the context has no end to watch once BEGIN was
	// sent); the ROLLBACK, past the deadline, still has CancelGrace.
	ctx, cancel = pgconn.WithDeadline(context.Background(), time.Now().Add(300*time.Millisecond))
	defer cancel()
	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.Exec(`SELECT pg_sleep(1)`) // no deadline of its own
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(), "past the transaction's deadline, ROLLBACK still has CancelGrace")
	require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid2))
	require.Equal(t, pid, pid2)
}

// A statement under WithDeadline that waits for one of the pool's
// connections, every one of them held, stops waiting at its deadline (the
// context ends for database/sql, though lib/pq is not given its end), and
// Unsent tells that it sent nothing.
func TestWithDeadlineEndsTheWaitForAConnection(t *testing.T) {
	t.Parallel()
	db := openOne(t)
	held, err := db.Conn(context.Background())
	require.NoError(t, err)
	ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(200*time.Millisecond))
	defer cancel()
	requirePoolWaitEnds(t, ctx, func() error {
		_, err := db.ExecContext(ctx, `SELECT 1`)
		return err
	}, held.Close, "the statement waited for a connection past its deadline")
	ctx, cancel = pgconn.WithDeadline(context.Background(), time.Now().Add(5*time.Second))
	defer cancel()
	_, err = db.ExecContext(ctx, `SELECT 1`)
	require.NoError(t, err)
}

// Rows under WithDeadline outside a transaction cost database/sql no
// goroutine: once the query reached a connection, which keeps the
// deadline, the context has no end left to watch (at one commit at a
// time, that goroutine's start and wake cost more CPU than the rest of
// the call). Not parallel: it counts the process's goroutines.
func TestWithDeadlineRowsStartNoWatcher(t *testing.T) {
	db := openOne(t)
	st, err := db.Prepare(`SELECT $1::int + 1`)
	require.NoError(t, err)
	defer st.Close()
	watchers := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "database/sql.(*Rows).awaitDone")
	}
	before := watchers()
	ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(5*time.Second))
	defer cancel()
	rows, err := st.QueryContext(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, before, watchers(), "a goroutine watches the Rows of a statement under WithDeadline")
	require.True(t, rows.Next())
	var v int
	require.NoError(t, rows.Scan(&v))
	require.Equal(t, 2, v)
	require.NoError(t, rows.Close())

	ctx2, cancel2 := pgconn.WithDeadline(context.Background(), time.Now().Add(5*time.Second))
	defer cancel2()
	rows, err = db.QueryContext(ctx2, `SELECT 1`)
	require.NoError(t, err)
	require.Equal(t, before, watchers(), "a goroutine watches the Rows of a query under WithDeadline")
	require.NoError(t, rows.Close())
	// A later query under the same context (whose Done is the deadline's
	// again once the connection is back in the pool): still none.
	rows, err = db.QueryContext(ctx2, `SELECT 2`)
	require.NoError(t, err)
	require.Equal(t, before, watchers(), "a goroutine watches the Rows of a later query under WithDeadline")
	require.NoError(t, rows.Close())
}

// Every call under a WithDeadline context has its wait for one of the
// pool's connections bounded by the deadline, not only the first: a
// statement, a query whose Rows were read, a transaction, each put its
// connection back, and the next call, with every connection held, stops
// waiting at the deadline (before, a context under which a call had
// reached a connection had no end for database/sql to wait with).
func TestWithDeadlineEndsEveryCallsWaitForAConnection(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"exec", "query", "tx"} {
		t.Run(first, func(t *testing.T) {
			t.Parallel()
			db := openOne(t)
			ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(time.Second))
			defer cancel()
			switch first {
			case "exec":
				_, err := db.ExecContext(ctx, `SELECT 1`)
				require.NoError(t, err)
			case "query":
				var v int
				require.NoError(t, db.QueryRowContext(ctx, `SELECT 1`).Scan(&v))
			case "tx":
				tx, err := db.BeginTx(ctx, nil)
				require.NoError(t, err)
				_, err = tx.ExecContext(ctx, `SELECT 1`)
				require.NoError(t, err)
				require.NoError(t, tx.Commit())
			}
			held, err := db.Conn(context.Background())
			require.NoError(t, err)
			requirePoolWaitEnds(t, ctx, func() error {
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					_ = tx.Rollback()
				}
				return err
			}, held.Close, "a later call under the context waited for a connection past its deadline")
		})
	}
}

// A call on the pool while a transaction under the same WithDeadline
// context holds a connection (a statement prepared inside it) has its
// wait for a connection bounded under a Sibling of the context.
func TestWithDeadlineSiblingEndsTheWaitInATransaction(t *testing.T) {
	t.Parallel()
	db := openOne(t)
	ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(time.Second))
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	requirePoolWaitEnds(t, ctx, func() error {
		st, err := db.PrepareContext(pgconn.Sibling(ctx), `SELECT 1`)
		if err == nil {
			_ = st.Close()
		}
		return err
	}, tx.Rollback, "a call under a Sibling waited for a connection past its deadline")
}
