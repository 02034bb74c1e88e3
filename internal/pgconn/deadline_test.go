package pgconn_test

import (
	"context"
	"database/sql"
	"errors"
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
// stays in the pool, and the deadline does not follow it into the next
// statements, prepared or not, inside a transaction or not.
func TestWithDeadlineCancelsTheStatement(t *testing.T) {
	t.Parallel()
	db := openOne(t)
	var pid, pid2 int
	require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))

	start := time.Now()
	ctx := pgconn.WithDeadline(context.Background(), time.Now().Add(300*time.Millisecond))
	require.Nil(t, ctx.Done(), "nothing needs to watch a WithDeadline context")
	_, err := db.ExecContext(ctx, `SELECT pg_sleep(30)`)
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
	ctx = pgconn.WithDeadline(context.Background(), time.Now().Add(200*time.Millisecond))
	var v int
	require.NoError(t, st.QueryRowContext(ctx, 1).Scan(&v))
	require.Equal(t, 2, v)
	time.Sleep(300 * time.Millisecond) // past that deadline, on an idle connection
	require.NoError(t, st.QueryRow(2).Scan(&v))
	require.Equal(t, 3, v)
	require.NoError(t, st.Close())

	// A transaction keeps its deadline for its statements and its COMMIT.
	ctx = pgconn.WithDeadline(context.Background(), time.Now().Add(5*time.Second))
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT 1`).Scan(&v))
	require.NoError(t, tx.Commit())
	tx, err = db.BeginTx(pgconn.WithDeadline(context.Background(), time.Now().Add(300*time.Millisecond)), nil)
	require.NoError(t, err)
	_, err = tx.Exec(`SELECT pg_sleep(1)`) // no deadline of its own
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(), "past the transaction's deadline, ROLLBACK still has CancelGrace")
	require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid2))
	require.Equal(t, pid, pid2)
}
