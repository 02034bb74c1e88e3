package engine_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// The commit path's statements run prepared, on generic plans. Against a
// table of 20,000 runs (a few hundred running) and their steps, those
// plans find each row by its key: no scan of a table, no read of every
// running run through the lease index, no probe of runs_by_workflow per
// pair of started runs, no hashed subplan that reads every completed run.
func TestHotStatementsGenericPlansProbeByKey(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	exec := hotPlanExec(ctx, t, e)
	seedHotPlanRuns(t, exec, 20000)
	exec(`ANALYZE {s}.runs`)
	exec(`ANALYZE {s}.steps`)

	plans, err := engine.HotPlansForTest(ctx, e)
	require.NoError(t, err)
	requireProbesByKey(t, plans)
	// The earlier runs of the started workflow IDs are found (and locked)
	// by one probe of runs_by_workflow per started run, not by a join that
	// probes it once per pair of started runs; the update then finds each
	// by its key.
	plan := plans["steps_finish_and_starts"]
	i, j, k := strings.Index(plan, "CTE nrlk"), strings.Index(plan, "CTE nrsup"), strings.Index(plan, "CTE nins")
	require.True(t, i >= 0 && j > i && k > j, plan)
	nrlk := plan[i:j]
	require.Contains(t, nrlk, "Index Cond: (workflow_id = nr", plan)
	require.NotContains(t, nrlk, "ANY", plan)
	require.Contains(t, plan[j:k], "runs_pkey", plan)
}

// A new deployment's tables (and a benchmark's) start empty and are not
// analysed for a while, and the generic plans made meanwhile are kept as
// they grow (see hotStmt). Those plans too find each row by its key.
// PostgreSQL guessed a batch's unnested arrays at 10 rows, and 10 index
// probes cost more in its model than a sequential scan and hash of a small
// runs table: at bench -n 300 -c 1 the commits read 1,044 rows of runs a
// workflow, in about 7 scans.
func TestHotStatementsGenericPlansProbeByKeyInFreshTables(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	exec := hotPlanExec(ctx, t, e)
	for _, n := range []int{0, 300} {
		if n > 0 {
			seedHotPlanRuns(t, exec, n)
		}
		plans, err := engine.HotPlansForTest(ctx, e)
		require.NoError(t, err)
		requireProbesByKey(t, plans)
	}
}

// hotPlanExec returns a function that runs a statement in e's schema,
// named {s} in it.
func hotPlanExec(ctx context.Context, t *testing.T, e *engine.Engine) func(q string, args ...any) {
	db, s := e.DB(), `"`+e.Schema()+`"`
	return func(q string, args ...any) {
		t.Helper()
		_, err := db.ExecContext(ctx, strings.ReplaceAll(q, "{s}", s), args...)
		require.NoError(t, err)
	}
}

// seedHotPlanRuns inserts n runs, one in 64 running and the rest
// completed, with three steps each.
func seedHotPlanRuns(t *testing.T, exec func(q string, args ...any), n int) {
	t.Helper()
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, closed_at, lease_owner, lease_expires_at, loads)
		SELECT 'r' || i, 'w' || i, 'wf', 'default',
			CASE WHEN i % 64 = 0 THEN 'running' ELSE 'completed' END,
			CASE WHEN i % 64 <> 0 THEN now() END,
			'worker', CASE WHEN i % 64 = 0 THEN now() + interval '30 seconds' END, 1
		FROM generate_series(1, $1::int) i`, n)
	exec(`INSERT INTO {s}.steps (run_id, seq, kind, name, status)
		SELECT 'r' || i, k, 'activity', 'a', 'completed' FROM generate_series(1, $1::int) i, generate_series(1, 3) k`, n)
}

// requireProbesByKey checks that no plan scans a table, reads the lease
// index or hashes a subplan's whole result.
func requireProbesByKey(t *testing.T, plans map[string]string) {
	t.Helper()
	require.Len(t, plans, 2)
	for name, plan := range plans {
		// result_listeners holds a row per process waiting on closes
		// elsewhere: reading it whole is its plan.
		plan := strings.ReplaceAll(plan, "Seq Scan on result_listeners", "")
		require.NotContains(t, plan, "Seq Scan", "%s:\n%s", name, plan)
		require.NotContains(t, plan, "runs_leased", "%s:\n%s", name, plan)
		require.NotContains(t, plan, "hashed SubPlan", "%s:\n%s", name, plan)
	}
}

// The claim of expired leases (the runs of a worker that died), on its
// generic plan, reads the lease index over the expired part only and
// touches a few buffers per run it takes: the index entry, the row it
// locks and updates in place, and its primary key probe. Among 20,000
// runs with 2,000 leases live and 500 expired, a claim of 200 that moved
// the lease's expiry (an indexed column) wrote an entry per run in each
// of runs' indexes whose predicate the row meets: about 29 buffers a run.
// That is what a claim of leases that expired more than a lease period ago
// still pays (store.claimExpiredLease: all workers were down, or a stall),
// and no more.
func TestExpiredClaimGenericPlanReadsWhatItTakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		age    string // of the expired leases, in seconds, from i
		perRun int
	}{
		{"within a lease period", "i % 13 + 1", 12},
		{"older", "i % 300 + 16", 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.Engine(t, nil)
			db, s := e.DB(), `"`+e.Schema()+`"`
			ctx := testenv.Ctx(t, 2*time.Minute)
			_, err := db.ExecContext(ctx, strings.NewReplacer("{s}", s, "{age}", c.age).Replace(`INSERT INTO {s}.runs
				(run_id, workflow_id, workflow_type, queue, status, closed_at, lease_owner, lease_expires_at, loads)
				SELECT 'r' || lpad(i::text, 6, '0'), md5(i::text), 'wf', 'default',
					CASE WHEN i % 40 = 0 OR i % 10 = 1 THEN 'running' ELSE 'completed' END,
					CASE WHEN i % 40 <> 0 AND i % 10 <> 1 THEN now() END,
					CASE WHEN i % 40 = 0 THEN 'gone' WHEN i % 10 = 1 THEN 'live' END,
					CASE WHEN i % 40 = 0 THEN now() - ({age}) * interval '1 second'
						WHEN i % 10 = 1 THEN now() + interval '1 hour' END, 1
				FROM generate_series(1, 20000) i`))
			require.NoError(t, err)
			_, err = db.ExecContext(ctx, `VACUUM ANALYZE `+s+`.runs`)
			require.NoError(t, err)

			plan, err := engine.ClaimExpiredPlanForTest(ctx, e, "default", []string{"wf"}, 200)
			require.NoError(t, err)
			require.Contains(t, plan, "Index Scan using runs_leased on runs", plan)
			require.Regexp(t, `Index Cond: \(\(lease_expires_at < now\(\)\) AND \(lease_expires_at >= `, plan)
			// The claim's read of its runs' signals (by the signals_by_run
			// index) is a subplan after the claim's own.
			claim, sigs, _ := strings.Cut(plan, "SubPlan")
			require.Contains(t, sigs, "signals_by_run", plan)
			for _, shape := range []string{"Seq Scan", "Bitmap", "Sort"} {
				require.NotContains(t, claim, shape, plan)
			}
			m := regexp.MustCompile(`(?m)^(?:\s*->\s+)?Update on runs r .*rows=(\d+) loops=1\)\n\s+Buffers: shared hit=(\d+)(?: read=(\d+))?`).FindStringSubmatch(plan)
			require.NotNil(t, m, plan)
			buffers := 0
			for _, n := range m[2:] {
				if n != "" {
					k, err := strconv.Atoi(n)
					require.NoError(t, err)
					buffers += k
				}
			}
			require.Equal(t, "200", m[1], plan)
			require.LessOrEqual(t, buffers, c.perRun*200, "more than %d buffers a claimed run:\n%s", c.perRun, plan)
			t.Log(plan)
		})
	}
}
