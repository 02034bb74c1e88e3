package sqlobserve_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgconn"
	"github.com/graftdev/graft/internal/sqlobserve"
	"github.com/graftdev/graft/internal/testenv"
)

// recorder writes down what it is told, one line an event.
type recorder struct {
	mu     sync.Mutex
	events []string
	keys   int
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) Key(q string) string {
	r.mu.Lock()
	r.keys++
	r.mu.Unlock()
	return strings.Join(strings.Fields(q), " ")
}

func (r *recorder) Statement(q string, inTx bool) {
	if inTx {
		q = "tx: " + q
	}
	r.add(q)
}

func (r *recorder) Prepare(q string) { r.add("prepare: " + q) }
func (r *recorder) Begin()           { r.add("BEGIN") }

func (r *recorder) End(commit bool) {
	if commit {
		r.add("COMMIT")
	} else {
		r.add("ROLLBACK")
	}
}

func (r *recorder) Connected(ctx context.Context, cn driver.Conn) {
	// A statement of its own on the new connection is not observed.
	_, err := cn.(driver.ExecerContext).ExecContext(ctx, `SET application_name = 'observed'`, nil)
	if err != nil {
		panic(err)
	}
	r.add("connected")
}

// An observed pool against the real server: the observer is told of each
// statement before it runs, prepared ones at each execution with their
// text worked out once, and of each transaction's ends; the connection
// keeps every interface of the one it wraps (the pool still knows its
// driver for pgconn's deadlines; Ping and session reset reach lib/pq).
func TestObserverIsToldWhatTheConnectionSends(t *testing.T) {
	t.Parallel()
	base, err := pgconn.NewConnector(testenv.DatabaseURL())
	require.NoError(t, err)
	r := &recorder{}
	db := sql.OpenDB(sqlobserve.NewConnector[string](base, r))
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	require.True(t, pgconn.Guards(db.Driver()))
	ctx := context.Background()
	require.NoError(t, db.PingContext(ctx))

	var name string
	require.NoError(t, db.QueryRowContext(ctx, `SELECT current_setting('application_name')`).Scan(&name))
	require.Equal(t, "observed", name, "Connected ran on the connection the pool uses")
	_, err = db.ExecContext(ctx, `CREATE TEMP TABLE seen (v int)`)
	require.NoError(t, err)
	st, err := db.PrepareContext(ctx, `INSERT INTO seen
		VALUES ($1)`)
	require.NoError(t, err)
	keys := r.keys
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	for i := range 2 {
		_, err = tx.StmtContext(ctx, st).ExecContext(ctx, i)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	require.Equal(t, keys, r.keys, "a prepared statement's text is worked out once")
	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT count(*) FROM seen`).Scan(&n))
	require.Equal(t, 2, n)
	require.NoError(t, tx.Rollback())
	require.NoError(t, st.Close())

	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, []string{
		"connected",
		`SELECT current_setting('application_name')`,
		`CREATE TEMP TABLE seen (v int)`,
		`prepare: INSERT INTO seen VALUES ($1)`,
		"BEGIN",
		`tx: INSERT INTO seen VALUES ($1)`,
		`tx: INSERT INTO seen VALUES ($1)`,
		"COMMIT",
		"BEGIN",
		`tx: SELECT count(*) FROM seen`,
		"ROLLBACK",
	}, r.events)
}
