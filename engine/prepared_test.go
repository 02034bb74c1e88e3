package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A hot statement runs prepared on the pool and in a transaction, and is
// prepared anew after 64 executions, then after 8 times as many: plans
// made while the tables were small do not stay for ever.
func TestHotStatementIsPreparedAnewAsItIsUsed(t *testing.T) {
	t.Parallel()
	db := testDB(t)
	s := &store{db: db}
	t.Cleanup(s.closeHot)
	ctx := context.Background()
	q := `SELECT $1::int + 1`
	one := func(tx dbtx, i int) {
		t.Helper()
		rows, err := s.hotQuery(ctx, tx, q, i)
		require.NoError(t, err)
		defer rows.Close()
		require.True(t, rows.Next())
		var v int
		require.NoError(t, rows.Scan(&v))
		require.Equal(t, i+1, v)
		require.NoError(t, rows.Close())
	}
	h := func() *hotStmt {
		v, ok := s.hot.Load(q)
		require.True(t, ok)
		return v.(*hotStmt)
	}
	for i := range firstRenewal {
		one(db, i)
	}
	first := h().cur.Load()
	require.EqualValues(t, firstRenewal, first.renewAt)
	require.Empty(t, h().old)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	one(tx, 1000) // execution 65: a new generation, run in the transaction
	require.NoError(t, tx.Commit())
	second := h().cur.Load()
	require.NotSame(t, first, second)
	require.EqualValues(t, firstRenewal*renewalFactor, second.renewAt)
	require.Len(t, h().old, 1)
	one(db, 7)

	s.closeHot()
	require.Nil(t, h().cur.Load())
	one(db, 8) // prepared again after close
}
