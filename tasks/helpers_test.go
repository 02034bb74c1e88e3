package tasks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// renewIn is the renewal workflow's input, built from the legacy row.
type renewIn struct {
	Domain string `json:"domain"`
	Years  int    `json:"years"`
}

// renewWorkflow does nothing but return; tests look at runs, not results.
var renewWorkflow = engine.NewWorkflow("renew", func(ctx engine.Context, in renewIn) (string, error) {
	return in.Domain, nil
})

var transferWorkflow = engine.NewWorkflow("transfer", func(ctx engine.Context, in renewIn) (string, error) {
	return in.Domain, nil
})

// env is a schema with graft's tables and a legacy operations table.
type env struct {
	e      *engine.Engine
	db     *sqlx.DB
	schema string
	table  string // schema-qualified, quoted
	flags  *tasks.Flags
}

const legacyDDL = `CREATE TABLE %s.operations (
	id         bigserial PRIMARY KEY,
	kind       text NOT NULL,
	domain     text,
	customer   text,
	years      jsonb,
	status     text NOT NULL DEFAULT 'pending',
	last_error text,
	created_at timestamptz NOT NULL DEFAULT now()
)`

func newEnv(t testing.TB) *env {
	t.Helper()
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(renewWorkflow, transferWorkflow))
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	_, err := e.DB().Exec(fmt.Sprintf(legacyDDL, pq.QuoteIdentifier(e.Schema())))
	require.NoError(t, err)
	f, err := tasks.NewFlags(tasks.FlagsConfig{DB: e.DB(), DatabaseURL: testenv.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return &env{e: e, db: e.DB(), schema: e.Schema(), table: pq.QuoteIdentifier(e.Schema()) + ".operations", flags: f}
}

// source is the legacy table's declaration: the key is the domain's TLD.
func (v *env) source() *tasks.Source {
	return &tasks.Source{
		Table:     v.schema + ".operations",
		ID:        "id",
		Kind:      "kind",
		Kinds:     map[string]tasks.KindSpec{"renew": {Workflow: "renew"}, "transfer": {Workflow: "transfer"}},
		Key:       tasks.KeySpec{Column: "domain", Transform: tasks.TransformTLD},
		Status:    tasks.StatusSpec{Column: "status", Pending: "pending", Graft: "graft", Legacy: "legacy"},
		Customer:  "customer",
		Error:     "last_error",
		CreatedAt: "created_at",
		Input:     map[string]string{"domain": "domain", "years": "years"},
	}
}

func (v *env) intake(t testing.TB, src *tasks.Source, mut func(*tasks.IntakeConfig)) *tasks.Intake {
	t.Helper()
	cfg := tasks.IntakeConfig{Engine: v.e, DatabaseURL: testenv.DatabaseURL(), Source: src, PollInterval: 50 * time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	in, err := tasks.NewIntake(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// insert adds n pending rows of kind with domains cycling through tlds.
func (v *env) insert(t testing.TB, n int, kind string, tlds ...string) {
	t.Helper()
	_, err := v.db.Exec(`INSERT INTO `+v.table+` (kind, domain, customer, years)
		SELECT $1, 'd' || i || '.' || ($3::text[])[1 + i % cardinality($3::text[])], 'cust-' || (i % 7), '1'::jsonb
		FROM generate_series(1, $2) i`, kind, n, pq.Array(tlds))
	require.NoError(t, err)
}

// setFlag creates or replaces kind's flag.
func (v *env) setFlag(t testing.TB, f tasks.Flag) *tasks.Flag {
	t.Helper()
	ctx := context.Background()
	s, err := v.flags.Snapshot(ctx)
	require.NoError(t, err)
	var version int64
	if cur := s.Flags[f.Kind]; cur != nil {
		version = cur.Version
	}
	out, err := v.flags.Set(ctx, tasks.Change{Flag: f, Version: version, Actor: "test", Reason: "test"})
	if err != nil {
		// the cache may be a change behind: read the flag's version afresh
		var cur int64
		require.NoError(t, v.db.Get(&cur, `SELECT COALESCE((SELECT version FROM `+pq.QuoteIdentifier(v.schema)+`.flags WHERE kind = $1), 0)`, f.Kind))
		out, err = v.flags.Set(ctx, tasks.Change{Flag: f, Version: cur, Actor: "test", Reason: "test"})
	}
	require.NoError(t, err)
	return out
}

func (v *env) count(t testing.TB, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, v.db.Get(&n, q, args...))
	return n
}

// drain claims batches until a pass over the table starts nothing.
func drain(t testing.TB, in *tasks.Intake) int {
	t.Helper()
	total, passStarted := 0, 0
	for {
		res, err := in.ClaimBatch(context.Background())
		require.NoError(t, err)
		total += res.Started
		passStarted += res.Started
		if res.PassEnded {
			if passStarted == 0 {
				return total
			}
			passStarted = 0
		}
	}
}
