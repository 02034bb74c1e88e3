package migrate_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/graftdev/graft/internal/migrate"
	"github.com/graftdev/graft/internal/testenv"
)

func set(files map[string]string) migrate.Set {
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys["migrations/"+name] = &fstest.MapFile{Data: []byte(body)}
	}
	return migrate.Set{Pkg: "test", FS: fsys, Table: "test_migrations", Lock: "graft-test-migrate", CreateSchema: true}
}

// Many processes migrating one schema at once apply each version once, in
// order; a later release applies only what is new.
func TestApplyConcurrentlyAndIncrementally(t *testing.T) {
	db := testenv.DB(t)
	schema := testenv.Schema(t)
	ctx := testenv.Ctx(t, time.Minute)
	v1 := set(map[string]string{
		"001_a.sql": `CREATE TABLE {{schema}}.a (n int); INSERT INTO {{schema}}.a VALUES (1);`,
		"002_b.sql": `INSERT INTO {{schema}}.a SELECT max(n) + 1 FROM {{schema}}.a;`,
	})
	var g errgroup.Group
	for range 8 {
		g.Go(func() error { return migrate.Apply(ctx, db.DB, schema, v1) })
	}
	require.NoError(t, g.Wait())
	var got []int
	require.NoError(t, db.SelectContext(ctx, &got, `SELECT n FROM `+schema+`.a ORDER BY n`))
	require.Equal(t, []int{1, 2}, got)

	v2 := set(map[string]string{
		"001_a.sql": `CREATE TABLE {{schema}}.a (n int); INSERT INTO {{schema}}.a VALUES (1);`,
		"002_b.sql": `INSERT INTO {{schema}}.a SELECT max(n) + 1 FROM {{schema}}.a;`,
		"003_c.sql": `INSERT INTO {{schema}}.a SELECT max(n) * 10 FROM {{schema}}.a;`,
	})
	require.NoError(t, migrate.Apply(ctx, db.DB, schema, v2))
	require.NoError(t, db.SelectContext(ctx, &got, `SELECT n FROM `+schema+`.a ORDER BY n`))
	require.Equal(t, []int{1, 2, 20}, got)
}

func TestApplyRejectsBadInput(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	err := migrate.Apply(ctx, db.DB, `bad"schema`, set(nil))
	require.EqualError(t, err, `test: migrate: schema "bad\"schema" is not a valid identifier`)

	schema := testenv.Schema(t)
	err = migrate.Apply(ctx, db.DB, schema, set(map[string]string{"first.sql": `SELECT 1`}))
	require.EqualError(t, err, "test: migration file first.sql has no version prefix")

	err = migrate.Apply(ctx, db.DB, schema, set(map[string]string{"001_a.sql": `SELECT 1`, "001_b.sql": `SELECT 2`}))
	require.EqualError(t, err, "test: migration files 001_a.sql and 001_b.sql have the same version 1")

	// A failing file applies nothing of the set.
	err = migrate.Apply(ctx, db.DB, schema, set(map[string]string{
		"001_a.sql": `CREATE TABLE {{schema}}.a (n int)`, "002_b.sql": `SELECT nonsense FROM nowhere`}))
	require.ErrorContains(t, err, "test: migration 002_b.sql: ")
	var n int
	require.NoError(t, db.GetContext(ctx, &n, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema))
	require.Zero(t, n)
}
