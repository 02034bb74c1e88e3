package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// -stats counts at the driver: a round trip for each statement, each
// preparation, BEGIN, COMMIT and ROLLBACK; a commit for each COMMIT and for
// each statement that writes outside a transaction; each execution of a
// statement under its label, a prepared statement's at each execution; the
// backend of each connection; and the backend's CPU for what it ran, each
// statement's counted when the connection sends the next.
func TestCountingDBCountsWhatItSends(t *testing.T) {
	t.Parallel()
	c := &dbCounters{}
	db, err := openCountingDB(1, c)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	count := func() (int64, int64) { return c.roundTrips.Load(), c.commits.Load() }
	rt0, cm0 := count()

	_, err = db.ExecContext(ctx, `CREATE TEMP TABLE counted (v int)`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `INSERT INTO counted VALUES (1)`) // writes outside a transaction
	require.NoError(t, err)
	var v int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT   count(*)
		FROM counted`).Scan(&v))
	st, err := db.PrepareContext(ctx, `INSERT INTO counted VALUES ($1)`)
	require.NoError(t, err)
	for i := range 2 {
		_, err = st.ExecContext(ctx, i)
		require.NoError(t, err)
	}
	require.NoError(t, st.Close())
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `INSERT INTO counted VALUES (3)`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRowContext(ctx, `SELECT v FROM counted LIMIT 1 FOR UPDATE`).Scan(&v))
	require.NoError(t, tx.Rollback())

	rt, cm := count()
	// CREATE, INSERT, SELECT, PREPARE, 2 executions, BEGIN, INSERT,
	// COMMIT, BEGIN, SELECT, ROLLBACK.
	require.EqualValues(t, 12, rt-rt0)
	// The INSERT outside a transaction, the prepared INSERT twice, COMMIT.
	require.EqualValues(t, 4, cm-cm0)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Len(t, c.pids, 1)
	require.Equal(t, map[string]int64{
		`CREATE TEMP TABLE counted (v int)`:        1,
		`INSERT INTO counted VALUES (1)`:           1,
		`SELECT count(*) FROM counted`:             1,
		`INSERT INTO counted VALUES ($1)`:          2,
		`INSERT INTO counted VALUES (3)`:           1,
		`SELECT v FROM counted LIMIT 1 FOR UPDATE`: 1,
	}, c.statements)
	for _, l := range []string{`CREATE TEMP TABLE counted (v int)`, `INSERT INTO counted VALUES ($1)`, "BEGIN", "COMMIT"} {
		require.Positive(t, c.stmtCPU[l], "%s: %v", l, c.stmtCPU)
	}
}
