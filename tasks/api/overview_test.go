package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// TestOverviewCountsTheWindow: the overview counts the operations created
// in the window per status, the closed ones per minute, and the failures
// per error type.
func TestOverviewCountsTheWindow(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	ev.start(t, "ok-1", "acme", orderIn{Item: "1"})
	ev.start(t, "ok-2", "acme", orderIn{Item: "2"})
	ev.start(t, "wait-1", "acme", orderIn{Item: "3", Wait: true})
	ev.waitFor(t, "ok-1", engine.StatusCompleted)
	ev.waitFor(t, "ok-2", engine.StatusCompleted)
	ev.waitFor(t, "wait-1", engine.StatusWaiting)
	ev.failCharge.Store(true)
	ev.start(t, "bad-1", "acme", orderIn{Item: "4"})
	ev.waitFor(t, "bad-1", engine.StatusFailed)

	res, err := ev.client(t, "viewer").GetOverviewWithResponse(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode(), string(res.Body))
	ov := res.JSON200
	require.Equal(t, 60, ov.Minutes)
	require.Len(t, ov.ClosedPerMinute, 60)
	require.Equal(t, map[string]int64{"completed": 2, "waiting": 1, "failed": 1}, ov.Statuses)
	var completed, failed int64
	for _, m := range ov.ClosedPerMinute {
		completed += m.Completed
		failed += m.Failed
		require.False(t, m.At.Before(ov.Since))
	}
	require.EqualValues(t, 2, completed)
	require.EqualValues(t, 1, failed)
	require.Equal(t, []api.ErrorTypeCount{{ErrorType: "CardDeclined", Count: 1}}, ov.Failures)

	bad, err := ev.client(t, "viewer").GetOverviewWithResponse(ctx, &api.GetOverviewParams{Minutes: ptr(2)})
	require.NoError(t, err)
	require.Equal(t, 400, bad.StatusCode())
	require.Contains(t, string(bad.Body), `"field":"minutes"`)
}

// TestOverviewQueriesUseTimeIndexes: over many operations spread across two
// months, each overview query reads its window through an index on the
// time column (runs_by_created, runs_closed), never the whole table.
func TestOverviewQueriesUseTimeIndexes(t *testing.T) {
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 120*time.Second)
	require.NoError(t, api.Migrate(ctx, e.DB(), e.Schema()))
	s := pq.QuoteIdentifier(e.Schema())
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+s+`.runs (run_id, workflow_id, workflow_type, queue, status, error, created_at, closed_at)
		SELECT 'r' || i, 'w' || i, 'order', 'default', st, CASE st WHEN 'failed' THEN '{"type":"CardDeclined"}'::jsonb END,
			now() - i * interval '25 seconds', now() - i * interval '25 seconds' + interval '1 minute'
		FROM generate_series(1, 200000) i, LATERAL (SELECT CASE i % 10 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'completed' END AS st) x`)
	require.NoError(t, err)
	_, err = e.DB().ExecContext(ctx, `ANALYZE `+s+`.runs`)
	require.NoError(t, err)
	since := time.Now().Add(-time.Hour)
	for i, q := range api.OverviewQueries(s) {
		var plan []string
		require.NoError(t, e.DB().SelectContext(ctx, &plan, `EXPLAIN `+q, since))
		text := strings.Join(plan, "\n")
		want := []string{"runs_by_created", "runs_closed", "runs_closed"}[i]
		require.Contains(t, text, want, "query %d:\n%s", i, text)
		require.NotContains(t, text, "Seq Scan on runs r ", "query %d:\n%s", i, text)
	}
}
