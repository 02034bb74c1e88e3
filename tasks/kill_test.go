package tasks_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// helperSchemaEnv carries the test's schema to the helper intake process.
const helperSchemaEnv = "GRAFT_TASKS_HELPER_SCHEMA"

// An intake process killed with SIGKILL inside a claim transaction, holding
// claimed rows whose workflows it started but did not commit: the rows stay
// pending with no run, and once PostgreSQL has rolled the transaction back
// two other intakes take every graft-routed row exactly once.
func TestIntakeKilledMidBatch(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	const rows, batch = 1000, 200
	v.insert(t, rows, "renew", "info", "fr", "com")
	intakes := []*tasks.Intake{}
	for i := 0; i < 2; i++ {
		intakes = append(intakes, v.intake(t, v.source(), func(c *tasks.IntakeConfig) { c.BatchSize = 50 }))
	}
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 50, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	s := pq.QuoteIdentifier(v.schema)
	want := v.count(t, `SELECT count(*) FROM `+v.table+` WHERE `+s+`.routed_to_graft(kind, lower(substring(domain from '[^.]+$')), id::text)`)
	require.Greater(t, want, batch)

	helper := testenv.Spawn(t, "TestHelperIntake", helperSchemaEnv+"="+v.schema)
	helper.WaitLine(t, fmt.Sprintf("parked %d", batch), 60*time.Second)
	// The helper holds its batch locked, uncommitted: no run is visible,
	// every row is still pending, and its rows cannot be claimed.
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Equal(t, rows, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`))
	free := `SELECT count(*) FROM (SELECT 1 FROM ` + v.table + ` WHERE status = 'pending' FOR UPDATE SKIP LOCKED) x`
	require.Equal(t, rows-batch, v.count(t, free), "the helper's batch is locked")
	helper.Kill(t)

	// PostgreSQL ends the dead client's transaction; its rows come free.
	testenv.Eventually(t, 60*time.Second, func() bool { return v.count(t, free) == rows }, "the killed intake's rows stay locked")
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`))
	require.Equal(t, rows, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`))

	var wg sync.WaitGroup
	started := make([]int, 2)
	for i, in := range intakes {
		wg.Add(1)
		go func() { defer wg.Done(); started[i] = drain(t, in) }()
	}
	wg.Wait()
	require.Equal(t, want, started[0]+started[1])
	require.Equal(t, want, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'graft'`))
	require.Equal(t, rows-want, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`), "legacy-routed rows are left alone")
	require.Equal(t, want, v.count(t, `SELECT count(*) FROM `+s+`.runs`), "one run per graft row")
	require.Equal(t, want, v.count(t, `SELECT count(DISTINCT r.workflow_id) FROM `+s+`.runs r JOIN `+v.table+` o ON o.id::text = r.workflow_id AND o.status = 'graft'`))
	require.Equal(t, want, v.count(t, `SELECT count(DISTINCT operation_id) FROM `+s+`.intake_claims`))
	require.Equal(t, want, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`))
}

// TestHelperIntake is the intake process TestIntakeKilledMidBatch kills: it
// claims one batch and parks before the commit. It does nothing in a
// normal test run.
func TestHelperIntake(t *testing.T) {
	schema := os.Getenv(helperSchemaEnv)
	if schema == "" {
		t.Skip("helper process of TestIntakeKilledMidBatch")
	}
	e, err := engine.New(engine.Config{DB: testenv.DB(t), DatabaseURL: testenv.DatabaseURL(), Schema: schema})
	require.NoError(t, err)
	require.NoError(t, e.Register(renewWorkflow, transferWorkflow))
	v := &env{e: e, db: e.DB(), schema: schema}
	in, err := tasks.NewIntake(context.Background(), tasks.IntakeConfig{Engine: e, DatabaseURL: testenv.DatabaseURL(), Source: v.source(), BatchSize: 200})
	require.NoError(t, err)
	tasks.SetBeforeCommitHookForTest(in, func(started int) {
		fmt.Printf("parked %d\n", started)
		_, _ = io.Copy(io.Discard, os.Stdin) // until killed
		os.Exit(0)
	})
	_, err = in.ClaimBatch(context.Background())
	require.NoError(t, err)
	t.Fatal("the claim committed")
}
