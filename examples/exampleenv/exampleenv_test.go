package exampleenv_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/examples/exampleenv"
	"github.com/graftdev/graft/grafttest"
)

// An example drops only a schema it created: one left by an earlier run of
// the same example is replaced, any other is refused and left as it was.
func TestSchemaDropsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 30*time.Second)
	db := grafttest.DB(t)
	name := grafttest.Schema(t)

	_, err := db.ExecContext(ctx, `CREATE SCHEMA `+name+`; CREATE TABLE `+name+`.precious (x int)`)
	require.NoError(t, err)
	_, err = exampleenv.Schema(ctx, db, "demo", name, false)
	require.ErrorContains(t, err, "schema "+name+" exists and was not created by this example")
	var n int
	require.NoError(t, db.GetContext(ctx, &n, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, name))
	require.Equal(t, 1, n, "the foreign schema is untouched")

	_, err = db.ExecContext(ctx, `DROP SCHEMA `+name+` CASCADE`)
	require.NoError(t, err)
	_, err = exampleenv.Schema(ctx, db, "demo", name, false)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `CREATE TABLE `+name+`.leftover (x int)`)
	require.NoError(t, err)
	_, err = exampleenv.Schema(ctx, db, "demo", name, true) // a server's state is kept
	require.NoError(t, err)
	require.NoError(t, db.GetContext(ctx, &n, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, name))
	require.Equal(t, 1, n)
	drop, err := exampleenv.Schema(ctx, db, "demo", name, false) // an interrupted run's schema is replaced
	require.NoError(t, err)
	require.NoError(t, db.GetContext(ctx, &n, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, name))
	require.Equal(t, 0, n)
	_, err = exampleenv.Schema(ctx, db, "other", name, true)
	require.Error(t, err, "another example's schema is refused")

	require.NoError(t, drop(ctx))
	require.NoError(t, db.GetContext(ctx, &n, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, name))
	require.Equal(t, 0, n)

	_, err = exampleenv.Schema(ctx, db, "demo", "Bad-Name", false)
	require.ErrorContains(t, err, `schema "Bad-Name" is not a lower-case SQL identifier`)
}
