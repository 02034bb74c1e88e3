package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// TestStatusCountsAreCapped seeds 200,000 runs and checks that the list's
// per-status counts read the runs_latest_by_status index alone (an index
// only scan per status, stopped at the cap: no scan of every run, no probe
// per run), are exact below api.CountCap and "at least api.CountCap" above
// it; and that the list's queries for the common filters read indexes.
func TestStatusCountsAreCapped(t *testing.T) {
	ev := newEnv(t, api.Config{})
	db, s := ev.e.DB(), `"`+ev.e.Schema()+`"`
	ctx := testenv.Ctx(t, 3*time.Minute)
	const n = 200000
	// Every 1000th run failed (200), every 100th else waiting for a signal
	// (1,800), the rest completed (198,000: past the cap).
	_, err := db.ExecContext(ctx, strings.ReplaceAll(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, created_at, closed_at)
		SELECT 'r' || i, 'w' || i, 'order', 'default',
			CASE WHEN i % 1000 = 0 THEN 'failed' WHEN i % 100 = 0 THEN 'waiting' ELSE 'completed' END,
			now() - i * interval '1 second', CASE WHEN i % 100 <> 0 OR i % 1000 = 0 THEN now() END
		FROM generate_series(1, $1) i`, "{s}", s), n)
	require.NoError(t, err)
	// A charge step per run, failed in the failed runs; every 10,000th
	// run (a waiting one) has a failed compensation report after it: it
	// needs an operator (20).
	_, err = db.ExecContext(ctx, strings.ReplaceAll(`INSERT INTO {s}.steps (run_id, seq, kind, name, status, error, attempts)
		SELECT 'r' || i, s, 'activity', CASE WHEN s = 1 THEN 'charge' ELSE $2 END,
			CASE WHEN s = 2 OR i % 1000 = 0 THEN 'failed' ELSE 'completed' END,
			CASE WHEN s = 2 OR i % 1000 = 0 THEN '{"kind":"application","message":"no"}'::jsonb END, 1
		FROM generate_series(1, $1) i, generate_series(1, 2) s WHERE s = 1 OR i % 10000 = 100`, "{s}", s), n, cancel.ReportActivity)
	require.NoError(t, err)
	// Every 50,000th failed run the engine parked for an operator (4): it
	// needs one too.
	_, err = db.ExecContext(ctx, strings.ReplaceAll(`UPDATE {s}.runs SET error = '{"kind":"application","type":"NeedsOperator","message":"parked"}'
		WHERE status = 'failed' AND substr(run_id, 2)::int % 50000 = 0`, "{s}", s))
	require.NoError(t, err)
	// As autovacuum leaves a table: analysed, its pages all-visible.
	_, err = db.ExecContext(ctx, `VACUUM ANALYZE `+s+`.runs`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `VACUUM ANALYZE `+s+`.steps`)
	require.NoError(t, err)

	explain := func(q string, args []any) string {
		t.Helper()
		var plan []string
		require.NoError(t, db.SelectContext(ctx, &plan, `EXPLAIN `+q, args...))
		return strings.Join(plan, "\n")
	}
	for _, f := range []api.ListOperationsParams{{}, {Kind: ptr("order")}, {CreatedAfter: ptr(time.Now().Add(-time.Hour))}} {
		q, args, err := api.CountsQueryForTest(ev.srv, f)
		require.NoError(t, err)
		text := explain(q, args)
		// Each status's branch stops at CountCap+1 index entries, read in
		// runs_latest_by_status alone (the planner may read the newest runs
		// instead for a status most runs are in); no branch scans the
		// table or probes for a newer run of each run.
		require.Equal(t, 7, strings.Count(text, "->  Limit  ("), "one LIMIT per status and for needs_operator:\n%s", text)
		require.GreaterOrEqual(t, strings.Count(text, "Index Only Scan Backward using runs_latest_by_status"), 4, "%s", text)
		require.NotContains(t, text, "Seq Scan", "%s", text)
		require.NotContains(t, text, "runs_by_workflow", "%s", text)
		require.Contains(t, text, "steps_failed_by_name", "needs_operator from the failed reports:\n%s", text)
		require.Contains(t, text, "runs_parked_for_operator", "needs_operator from the parked runs:\n%s", text)
		t.Logf("counts plan for %+v:\n%s", f, text)
	}
	failed := []api.StatusFilter{api.StatusFilterFailed}
	for _, f := range []api.ListOperationsParams{{}, {Status: &failed}, {Status: &failed, Kind: ptr("order")},
		{Status: &[]api.StatusFilter{api.StatusFilterNeedsOperator}}, {Status: &[]api.StatusFilter{api.StatusFilterWaitingSignal}}} {
		list, _, args, err := api.ListQueriesForTest(ev.srv, f)
		require.NoError(t, err)
		text := explain(list, args)
		require.NotContains(t, text, "Seq Scan", "%s", text)
		if f.Status != nil && (*f.Status)[0] == api.StatusFilterFailed {
			// A page of one status: its keys from the index alone, however
			// many newer runs are in other statuses.
			require.Contains(t, text, "Index Only Scan Backward using runs_latest_by_status", "%s", text)
		}
		if f.Status != nil && (*f.Status)[0] == api.StatusFilterNeedsOperator {
			require.Contains(t, text, "runs_parked_for_operator", "%s", text)
		}
	}

	page := ev.list(t, "viewer", api.ListOperationsParams{Limit: ptr(1)})
	require.EqualValues(t, n/1000, page.Counts["failed"])
	require.EqualValues(t, n/100-n/1000, page.Counts["waiting"])
	require.EqualValues(t, n/100-n/1000, page.Counts[api.CondWaitingSignal])
	require.EqualValues(t, n/10000+n/50000, page.Counts[api.CondNeedsOperator])
	require.EqualValues(t, api.CountCap, page.Counts["completed"])
	require.NotNil(t, page.CountsAtLeast)
	require.Equal(t, []string{"completed"}, *page.CountsAtLeast)
	require.EqualValues(t, api.CountCap, *page.CountCap)

	// A filter that leaves fewer than the cap: every count exact.
	after := time.Now().Add(-5000 * time.Second)
	var want int64
	require.NoError(t, db.GetContext(ctx, &want, `SELECT count(*) FROM `+s+`.runs WHERE status = 'completed' AND created_at >= $1`, after))
	require.Greater(t, want, int64(4000))
	page = ev.list(t, "viewer", api.ListOperationsParams{CreatedAfter: ptr(after), Limit: ptr(1)})
	require.Nil(t, page.CountsAtLeast)
	require.Equal(t, want, page.Counts["completed"])
}
