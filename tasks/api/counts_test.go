package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// TestStatusCountsAreCapped seeds 200,000 runs and checks that the list's
// per-status counts read the runs_by_status index (no scan of every run),
// are exact below api.CountCap and "at least api.CountCap" above it.
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
	_, err = db.ExecContext(ctx, `ANALYZE `+s+`.runs`)
	require.NoError(t, err)

	q, args, err := api.StatusCountsQueryForTest(ev.srv, api.ListOperationsParams{})
	require.NoError(t, err)
	var plan []string
	require.NoError(t, db.SelectContext(ctx, &plan, `EXPLAIN `+q, args...))
	text := strings.Join(plan, "\n")
	// Each status's branch stops at CountCap+1 rows; the rare ones are
	// found through the index. (The planner may still pick a scan for a
	// status whose rows it expects on most pages.)
	require.Contains(t, text, "runs_by_status")
	require.Equal(t, 6, strings.Count(text, "Limit  (")-strings.Count(text, "Index Scan Backward using steps_pkey"), "one LIMIT per status:\n%s", text)

	page := ev.list(t, "viewer", api.ListOperationsParams{Limit: ptr(1)})
	require.EqualValues(t, n/1000, page.Counts["failed"])
	require.EqualValues(t, n/100-n/1000, page.Counts["waiting"])
	require.EqualValues(t, n/100-n/1000, page.Counts[api.CondWaitingSignal])
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
