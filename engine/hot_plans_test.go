package engine_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// The commit path's statements and the claim of due runs run prepared, on
// generic plans. Against a table of 20,000 runs (a few hundred running)
// and their steps, those plans find each row by its key: no scan of a
// table, no read of every running run through the lease index, no probe of
// runs_by_workflow per pair of started runs, no hashed subplan that reads
// every completed run; the claim reads the (queue, wake_at) index.
func TestHotStatementsGenericPlansProbeByKey(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	exec := hotPlanExec(ctx, t, e)
	noAutovacuum(exec, "runs", "steps")
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
	for _, name := range []string{"steps+fin+timers+news+new_steps", "news+new_steps", "news+new_steps/values1", "news+new_steps/values2"} {
		plan := plans[name]
		// The steps of new runs are nins, or with steps of existing runs
		// in the same statement, ins (after nr: see allStepsSQL).
		i, j := strings.Index(plan, "CTE nrlk"), strings.Index(plan, "CTE nrsup")
		k := strings.Index(plan, "CTE nins")
		if k < 0 {
			k = strings.Index(plan, "CTE ins")
		}
		require.True(t, i >= 0 && j > i && k > j, "%s:\n%s", name, plan)
		nrlk := plan[i:j]
		require.Contains(t, nrlk, "Index Cond: (workflow_id = nr", "%s:\n%s", name, plan)
		require.NotContains(t, nrlk, "ANY", "%s:\n%s", name, plan)
		require.Contains(t, plan[j:k], "runs_pkey", "%s:\n%s", name, plan)
	}
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
	// An autovacuum's ANALYZE of the 300 runs would make them analysed.
	noAutovacuum(exec, "runs", "steps")
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

// noAutovacuum turns autovacuum off for the tables of a test's schema, so
// that their statistics, visibility map and free space are those the test
// made, whenever autovacuum would get to them on a busy server.
func noAutovacuum(exec func(q string, args ...any), tables ...string) {
	for _, table := range tables {
		exec(`ALTER TABLE {s}.` + table + ` SET (autovacuum_enabled = off)`)
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

// nrSubPlan matches a subplan that reads the commit statement's CTE nr.
var nrSubPlan = regexp.MustCompile(`SubPlan (\d+)\n\s*->  CTE Scan on nr `)

// requireProbesByKey checks that no plan scans a table, reads the lease
// index or hashes a subplan's whole result.
func requireProbesByKey(t *testing.T, plans map[string]string) {
	t.Helper()
	require.Len(t, plans, 3*17+2, "the commit statement's shapes (rows as arrays, as VALUES of one and of two) and the claims")
	for _, name := range []string{"claim_due", "claim_due_queues"} {
		require.Contains(t, plans[name], "Index Scan using runs_claimable on runs", "%s:\n%s", name, plans[name])
	}
	for name, plan := range plans {
		// result_listeners holds a row per process waiting on closes
		// elsewhere: reading it whole is its plan.
		plan := strings.ReplaceAll(plan, "Seq Scan on result_listeners", "")
		// The steps of new runs are written where their run is among
		// the statement's inserted runs (CTE nr, the batch's own rows):
		// a hash of those is not a read of a table.
		for _, m := range nrSubPlan.FindAllStringSubmatch(plan, -1) {
			plan = strings.ReplaceAll(plan, "hashed SubPlan "+m[1]+")", "SubPlan "+m[1]+" over nr)")
		}
		require.NotContains(t, plan, "Seq Scan", "%s:\n%s", name, plan)
		require.NotContains(t, plan, "runs_leased", "%s:\n%s", name, plan)
		require.NotContains(t, plan, "hashed SubPlan", "%s:\n%s", name, plan)
	}
}

// The claim of expired leases (the runs of a worker that died), on its
// generic plan, reads the lease index over the expired part only and
// touches a few buffers per run it takes: the index entry, the row it
// locks and updates in place, and its primary key probes. Among 20,000
// runs with 2,000 leases live and 500 expired, a claim of 200 that moved
// the lease's expiry (an indexed column) wrote an entry per run in each
// of runs' indexes whose predicate the row meets: about 28 buffers a run.
// That is what a claim of leases that expired more than a lease period ago
// still pays (store.claimExpiredLease: all workers were down, or a stall),
// and no more; a claim of leases that expired within a lease period
// writes no index entry at all.
//
// The buffers counted are those of the schema's own tables and indexes,
// not the plan's totals, which can also hold system catalog pages the
// backend reads meanwhile (its planning read 132 to 159). runs is vacuumed (hint bits set, no dead
// rows to prune) and autovacuum is off for it, so nothing changes it
// between the vacuum and the claim. What still varies is whether
// that vacuum could mark the pages all-visible: it cannot while any
// session on the server holds an older snapshot, and when it could, the
// lock and the update each read the visibility map's page, 2 buffers a
// run more (2,417 or 2,817 buffers for 200 runs within a lease period,
// 5,508 or 5,908 older, and nothing else between them in 30 runs of each
// at load 20 on 2 cores). The lease period of the first case is 10 minutes,
// so that its leases, 1 to 13 seconds expired when inserted, are still
// within a lease period when a slow machine gets to the claim: at the
// default 15 seconds a claim 3 to 5 seconds after the insert moved the
// oldest of them (between 76 and 152 of the 200 runs wrote index
// entries: 2,552 buffers in the update against its bound of 2,400).
func TestExpiredClaimGenericPlanReadsWhatItTakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		ttl      time.Duration // the lease period
		age      string        // of the expired leases, in seconds, from i
		perRun   int
		heapOnly bool
	}{
		{"within a lease period", 10 * time.Minute, "i % 13 + 1", 15, true},
		{"older", engine.DefaultLeaseTTL, "i % 300 + 16", 31, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.Engine(t, &engine.Config{LeaseTTL: c.ttl})
			ctx := testenv.Ctx(t, 2*time.Minute)
			exec := hotPlanExec(ctx, t, e)
			noAutovacuum(exec, "runs", "signals")
			exec(strings.ReplaceAll(`INSERT INTO {s}.runs
				(run_id, workflow_id, workflow_type, queue, status, closed_at, lease_owner, lease_expires_at, loads)
				SELECT 'r' || lpad(i::text, 6, '0'), md5(i::text), 'wf', 'default',
					CASE WHEN i % 40 = 0 OR i % 10 = 1 THEN 'running' ELSE 'completed' END,
					CASE WHEN i % 40 <> 0 AND i % 10 <> 1 THEN now() END,
					CASE WHEN i % 40 = 0 THEN 'gone' WHEN i % 10 = 1 THEN 'live' END,
					CASE WHEN i % 40 = 0 THEN now() - ({age}) * interval '1 second'
						WHEN i % 10 = 1 THEN now() + interval '1 hour' END, 1
				FROM generate_series(1, 20000) i`, "{age}", c.age))
			exec(`VACUUM ANALYZE {s}.runs`)

			plan, fetched, err := engine.ClaimExpiredPlanForTest(ctx, e, "default", []string{"wf"}, 200)
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
			// The update finds each run it takes by its primary key.
			require.Regexp(t, `Update on runs r .*rows=200 loops=1\)\n.*\n\s+->  Nested Loop .*\n(?:.*\n)*?\s+->  Index Scan using runs_pkey on runs r .*rows=1 loops=200\)`, claim)
			buffers := int64(0)
			for name, k := range fetched {
				buffers += k
				if c.heapOnly && name != "runs" && name != "runs_pkey" && name != "runs_leased" && name != "signals_by_run" {
					// The planner's look at the index, not an entry a run.
					require.LessOrEqual(t, k, int64(4), "%s: an index entry written by a heap-only claim\n%v\n%s", name, fetched, plan)
				}
			}
			t.Logf("%d buffers of %v\n%s", buffers, fetched, plan)
			require.LessOrEqual(t, buffers, int64(c.perRun*200), "more than %d buffers a claimed run:\n%v\n%s", c.perRun, fetched, plan)
		})
	}
}

// The cancellation of the open children of closing parents (a commit's,
// planned for its parents' IDs) finds them by their parents and checks
// their status on the rows. With status IN, PostgreSQL read runs_one_open
// whole instead when its statistics said few runs were open, though every
// run had once been (their entries stay until a vacuum): among 60,000
// runs, 5 open, the cancellation for 100 to 1,000 parents read
// runs_one_open (28 to 142 ms) rather than runs_by_parent (3 to 12).
func TestCancelChildrenFindsThemByParent(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	exec := hotPlanExec(ctx, t, e)
	noAutovacuum(exec, "runs")
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status)
		SELECT 'r' || i, 'w' || i, 'wf', 'default', 'running' FROM generate_series(1, 55000) i`)
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, parent_run_id, parent_close_policy)
		SELECT 'c' || i || '-' || k, 'wc' || i || '-' || k, 'wf', 'default', 'running', 'r' || i, 'cancel'
		FROM generate_series(1, 1000) i, generate_series(1, 5) k`)
	open := []string{"c1-1", "c2-1", "c3-1", "c4-1", "c5-1"}
	exec(`UPDATE {s}.runs SET status = 'completed', closed_at = now() WHERE NOT run_id = ANY($1)`, pq.Array(open))
	exec(`ANALYZE {s}.runs`)

	parents := make([]string, 300)
	for i := range parents {
		parents[i] = fmt.Sprintf("r%d", i+1)
	}
	plan, err := engine.CancelChildrenPlanForTest(ctx, e, parents)
	require.NoError(t, err)
	require.Contains(t, plan, "runs_by_parent", plan)
	require.NotContains(t, plan, "runs_one_open", plan)
	require.NotContains(t, plan, "Seq Scan", plan)
	ids, err := engine.CancelChildrenOfForTest(ctx, e, parents)
	require.NoError(t, err)
	require.ElementsMatch(t, open, ids)
}

// A claim reads the signals of a claimed run, and its event count as of
// the claim's snapshot, only for a run that counted an event (see
// claimSQL): of 300 due runs, the 100 signalled ones take the two
// subplans, and the 200 others skip them.
func TestClaimReadsSignalsOfSignalledRunsOnly(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, time.Minute)
	exec := hotPlanExec(ctx, t, e)
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, wake_at, event_seq)
		SELECT 'r' || i, 'w' || i, 'wf', 'default', 'pending', now() - interval '1 second',
			CASE WHEN i % 3 = 0 THEN 1 ELSE 0 END
		FROM generate_series(1, 300) i`)
	exec(`INSERT INTO {s}.signals (run_id, name, payload) SELECT 'r' || i, 'go', '1' FROM generate_series(3, 300, 3) i`)
	exec(`ANALYZE {s}.runs`)
	exec(`ANALYZE {s}.signals`)

	plan, _, err := engine.ClaimDuePlanForTest(ctx, e, "default", []string{"wf"}, 300)
	require.NoError(t, err)
	require.Regexp(t, `Update on runs r .*rows=300 loops=1\)`, plan)
	subs := regexp.MustCompile(`SubPlan \d+\n\s+->  .*loops=(\d+)\)\n`).FindAllStringSubmatch(plan, -1)
	require.Len(t, subs, 2, plan)
	for _, sub := range subs {
		require.Equal(t, "100", sub[1], plan)
	}
}
