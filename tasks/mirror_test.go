package tasks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	graftsync "github.com/graftdev/graft/sync"
	"github.com/graftdev/graft/tasks"
)

// Intake and a same-database sync mirror on the same legacy table, with a
// mapping that gives StatePending a value: the workflow's start writes the
// row (through the mirror, in the claim transaction) as well as intake's
// claim. Every graft-routed row is still claimed once, started once, and
// shows the mirror's states from then on; bad rows stay pending.
func TestIntakeWithMirrorMappingPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := testenv.Schema(t)
	db := testenv.DB(t)
	_, err := db.Exec(`CREATE SCHEMA ` + pq.QuoteIdentifier(schema) + `; ` + fmt.Sprintf(legacyDDL, pq.QuoteIdentifier(schema)))
	require.NoError(t, err)
	mirror, err := graftsync.New(ctx, graftsync.Config{DB: db, Schema: schema, Mapping: graftsync.Mapping{
		Table: schema + ".operations", Workflows: []string{"renew"}, Key: graftsync.Key{Column: "id"},
		Status: &graftsync.StatusColumn{Column: "status", Values: map[graftsync.State]string{
			graftsync.StatePending: "queued", graftsync.StateRunning: "running", graftsync.StateCompleted: "done"}},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mirror.Close() })
	e := testenv.Engine(t, &engine.Config{Schema: schema, Interceptors: []engine.Interceptor{mirror}})
	require.NoError(t, e.Register(renewWorkflow, transferWorkflow))
	require.NoError(t, tasks.Migrate(ctx, db, schema))
	f, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	v := &env{e: e, db: db, schema: schema, table: pq.QuoteIdentifier(schema) + ".operations", flags: f}
	in := v.intake(t, v.source(), func(c *tasks.IntakeConfig) { c.BatchSize = 20 })
	v.insert(t, 100, "renew", "info", "com")
	_, err = v.db.Exec(`UPDATE ` + v.table + ` SET years = '"two"' WHERE id = 2`)
	require.NoError(t, err)
	v.setFlag(t, tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})

	require.Equal(t, 49, drain(t, in), "the .info renewals but the bad one")
	s := pq.QuoteIdentifier(schema)
	require.Equal(t, 49, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'queued'`), "the mirror's pending value")
	require.Equal(t, 51, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`))
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE id = 2 AND status = 'pending' AND last_error LIKE '%years%'`))
	require.Equal(t, 49, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Equal(t, 49, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`))
	require.Zero(t, drain(t, in), "nothing is claimed twice")

	testenv.Worker(t, e, engine.WorkerConfig{})
	testenv.Eventually(t, 60*time.Second, func() bool {
		return v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'done'`) == 49
	}, "the mirror did not show the renewals done")
	require.Equal(t, 49, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
}

// A mirror whose StatePending value is the source's pending value would
// make every started row look pending again, to be claimed on every pass:
// intake refuses such a batch, saying why, and claims nothing.
func TestIntakeRefusesAMirrorThatWritesPendingBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := testenv.Schema(t)
	db := testenv.DB(t)
	_, err := db.Exec(`CREATE SCHEMA ` + pq.QuoteIdentifier(schema) + `; ` + fmt.Sprintf(legacyDDL, pq.QuoteIdentifier(schema)))
	require.NoError(t, err)
	mirror, err := graftsync.New(ctx, graftsync.Config{DB: db, Schema: schema, Mapping: graftsync.Mapping{
		Table: schema + ".operations", Key: graftsync.Key{Column: "id"},
		Status: &graftsync.StatusColumn{Column: "status", Values: map[graftsync.State]string{graftsync.StatePending: "pending"}},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mirror.Close() })
	e := testenv.Engine(t, &engine.Config{Schema: schema, Interceptors: []engine.Interceptor{mirror}})
	require.NoError(t, e.Register(renewWorkflow, transferWorkflow))
	require.NoError(t, tasks.Migrate(ctx, db, schema))
	f, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	v := &env{e: e, db: db, schema: schema, table: pq.QuoteIdentifier(schema) + ".operations", flags: f}
	in := v.intake(t, v.source(), nil)
	v.insert(t, 5, "renew", "info")
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	_, err = in.ClaimBatch(ctx)
	require.ErrorContains(t, err, `show status.pending "pending" again`)
	require.ErrorContains(t, err, "StatePending")
	s := pq.QuoteIdentifier(schema)
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`))
}
