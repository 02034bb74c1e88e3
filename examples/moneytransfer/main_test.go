package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/examples/exampleenv"
	"github.com/graftdev/graft/grafttest"
)

// The example end to end: three transfers against real PostgreSQL, then the
// bank's journal read back. The refused transfer moved nothing; the one to
// a closed account withdrew and refunded once.
func TestMoneyTransfer(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 2*time.Minute)
	schema := grafttest.Schema(t)
	var out strings.Builder
	require.NoError(t, run(ctx, options{DatabaseURL: grafttest.DatabaseURL(), Schema: schema, Keep: true}, &out))
	t.Log("\n" + out.String())
	require.Equal(t, `before: alice 100.00, bob 50.00, carol 0.00 (closed)
transfer-1 alice -> bob 30.00: done (deposit 2 attempts)
transfer-2 bob -> alice 500.00: refused, account bob holds less than 500.00 (withdrawal 1 attempt)
transfer-3 alice -> carol 20.00: failed, account carol is closed; withdrawal compensated: bank.withdraw by bank.refund (compensated)
after:  alice 70.00, bob 80.00, carol 0.00
total 150.00 before and after
`, out.String())

	b := &bank{db: grafttest.DB(t), schema: schema}
	var journal []struct {
		Account string
		Amount  int64
	}
	require.NoError(t, b.db.SelectContext(ctx, &journal, `SELECT account, amount FROM `+b.table("movements")+` ORDER BY at, amount`))
	require.ElementsMatch(t, []struct {
		Account string
		Amount  int64
	}{{"alice", -30_00}, {"bob", 30_00}, {"alice", -20_00}, {"alice", 20_00}}, journal)
}

// A movement run again with the same idempotency key (a retry, or a
// worker that died after its commit) changes nothing the second time.
func TestMoveIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 30*time.Second)
	db := grafttest.DB(t)
	schema := grafttest.Schema(t)
	_, err := exampleenv.Schema(ctx, db, "moneytransfer", schema, false)
	require.NoError(t, err)
	b := &bank{db: db, schema: schema}
	require.NoError(t, b.create(ctx))
	require.NoError(t, b.open(ctx, "dave", 10_00, false))
	for i := 0; i < 2; i++ {
		require.NoError(t, b.move(context.Background(), "k1", "dave", -4_00))
	}
	bal, err := b.balances(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(6_00), bal["dave"])
}
