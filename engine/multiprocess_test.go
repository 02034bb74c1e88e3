package engine_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Three worker processes share one database and 500 workflows. Each
// workflow unloads in the middle (a sleep longer than UnloadAfter), so runs
// move between processes. Every workflow completes exactly once: one run
// per ID, each completed, each activity executed once.
func TestThreeWorkerProcessesFiveHundredWorkflows(t *testing.T) {
	t.Parallel()
	const n = 500
	e := testenv.Engine(t, nil)
	schema, db := e.Schema(), e.DB()
	rbTables(t, db, schema)
	require.NoError(t, e.Register(rbProcessDefs(db, schema)...))
	c := e.Client()
	ctx := testenv.Ctx(t, 100*time.Second)

	var procs []*testenv.Proc
	for i := 0; i < 3; i++ {
		procs = append(procs, rbSpawn(t, schema, 15*time.Second, time.Millisecond))
	}
	for _, p := range procs {
		p.WaitLine(t, rbHelperReady, rbReadyWithin)
	}

	ids := rbIDs("fleet", n)
	// Many concurrent starters, as an intake would have; their starts share
	// group commits.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 50 {
				_, err := c.StartByName(ctx, "proc.fleet", []byte(fmt.Sprint(i)), &engine.StartOptions{ID: ids[i]})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var closed []engine.RunInfo
	testenv.Eventually(t, 90*time.Second, func() bool {
		var err error
		closed, err = c.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusCompleted, engine.StatusFailed}, Limit: 10000})
		return err == nil && len(closed) >= n
	}, "only %d of %d workflows closed", len(closed), n)

	all, err := c.List(ctx, engine.ListFilter{Limit: 10000})
	require.NoError(t, err)
	require.Len(t, all, n, "one run per workflow ID")
	seen := map[string]engine.RunInfo{}
	resumed := 0
	for _, r := range all {
		_, dup := seen[r.WorkflowID]
		require.False(t, dup, "workflow %s has more than one run", r.WorkflowID)
		seen[r.WorkflowID] = r
		require.Equal(t, engine.StatusCompleted, r.Status, "workflow %s: %v", r.WorkflowID, r.Error)
		if r.Loads >= 2 {
			resumed++
		}
	}
	// A run whose activity commit took longer than the sleep finds its timer
	// already due and need not unload; most runs do unload and resume.
	require.Greater(t, resumed, n/2, "runs unloaded at their sleep and resumed by replay")
	for i, id := range ids {
		r, ok := seen[id]
		require.True(t, ok, "workflow %s has no run", id)
		require.JSONEq(t, fmt.Sprintf(`"%d:first-done,final-done"`, i), string(r.Output))
	}

	// Each activity ran exactly once per workflow (no crash, so no re-run).
	rows, err := db.Query(`SELECT workflow_id, step, count(*) FROM ` + pq.QuoteIdentifier(schema) + `.executions
		GROUP BY workflow_id, step`)
	require.NoError(t, err)
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var id, step string
		var k int
		require.NoError(t, rows.Scan(&id, &step, &k))
		require.Equal(t, 1, k, "%s of %s ran %d times", step, id, k)
		counts[step]++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]int{"first": n, "final": n}, counts)

	// The work was shared: more than one process executed activities.
	var pids int
	require.NoError(t, db.QueryRow(`SELECT count(DISTINCT pid) FROM `+pq.QuoteIdentifier(schema)+`.executions`).Scan(&pids))
	require.GreaterOrEqual(t, pids, 2, "activities ran in %d process(es)", pids)
	var moved int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+pq.QuoteIdentifier(schema)+`.executions a JOIN `+
		pq.QuoteIdentifier(schema)+`.executions b ON a.workflow_id = b.workflow_id AND a.step = 'first' AND b.step = 'final'
		WHERE a.pid <> b.pid`).Scan(&moved))
	t.Logf("%d of %d runs resumed by replay; %d finished in another process than they started in", resumed, n, moved)
}
