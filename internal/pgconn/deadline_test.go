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
	require.True(t, pgconn.Unsent(ctx))
	_, err := db.ExecContext(ctx, `SELECT pg_sleep(30)`)
	require.False(t, pgconn.Unsent(ctx))
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
	waited := make(chan error, 1)
	go func() {
		_, err := db.ExecContext(ctx, `SELECT 1`)
		waited <- err
	}()
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		require.NoError(t, held.Close())
		t.Fatal("the statement waited for a connection past its deadline")
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, pgconn.Unsent(ctx), "nothing reached a connection")
	require.NoError(t, held.Close())
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
}
