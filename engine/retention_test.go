package engine_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// 50,000 runs past the retention period are removed, with their steps,
// signals and heartbeat details, by one round of the retention loop (in
// bounded batches, read from an index on closed_at); runs closed inside the
// retention period and open runs keep everything. The loop runs every
// 200ms from the start; the runs come in one transaction, so the first
// round that finds any finds them all.
func TestRetentionPurgesFiftyThousandRunsInOneRound(t *testing.T) {
	t.Parallel()
	const old, kept = 50000, 300
	cfg := engine.Config{Retention: 24 * time.Hour}
	engine.SetPurgeIntervalForTest(&cfg, 200*time.Millisecond)
	e := testenv.Engine(t, &cfg)
	db, s := e.DB(), `"`+e.Schema()+`"`
	ctx := testenv.Ctx(t, 5*time.Minute)

	var mu sync.Mutex
	var removing []int // the rounds that removed runs, what each removed
	var lastErr error
	engine.SetPurgeHookForTest(e, func(n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			lastErr = err
		}
		if n > 0 {
			removing = append(removing, n)
		}
	})

	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	exec := func(q string, args ...any) {
		t.Helper()
		_, err := tx.ExecContext(ctx, strings.ReplaceAll(q, "{s}", s), args...)
		require.NoError(t, err)
	}
	// Runs 1..old closed two days ago and more; then runs closed an hour ago
	// and open runs. Each has two steps; every tenth a signal and a
	// heartbeat.
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, closed_at)
		SELECT 'r' || i, 'w' || i, 'wf', 'default',
			CASE WHEN i > $1 + $2 THEN (ARRAY['pending','running','waiting'])[1 + i % 3]
			     ELSE (ARRAY['completed','failed','cancelled','continued','reset'])[1 + i % 5] END,
			CASE WHEN i <= $1 THEN now() - interval '2 days' - i * interval '1 second'
			     WHEN i <= $1 + $2 THEN now() - interval '1 hour' END
		FROM generate_series(1, $1 + 2 * $2) i`, old, kept)
	exec(`INSERT INTO {s}.steps (run_id, seq, kind, name, status)
		SELECT 'r' || i, k, 'activity', 'a', 'completed' FROM generate_series(1, $1 + 2 * $2) i, generate_series(1, 2) k`, old, kept)
	exec(`INSERT INTO {s}.signals (run_id, name) SELECT 'r' || i, 'sig' FROM generate_series(10, $1 + 2 * $2, 10) i`, old, kept)
	exec(`INSERT INTO {s}.heartbeats (run_id, seq, details) SELECT 'r' || i, 1, '\x00' FROM generate_series(10, $1 + 2 * $2, 10) i`, old, kept)
	exec(`ANALYZE {s}.runs`)
	require.NoError(t, tx.Commit())

	// The purge's scan reads the closed_at index, not the whole table.
	var plan []string
	require.NoError(t, db.SelectContext(ctx, &plan, strings.ReplaceAll(`EXPLAIN SELECT run_id FROM {s}.runs
		WHERE closed_at < now() - interval '1 day' ORDER BY closed_at LIMIT 1000 FOR UPDATE SKIP LOCKED`, "{s}", s)))
	require.Contains(t, strings.Join(plan, "\n"), "runs_closed", "purge plan:\n%s", strings.Join(plan, "\n"))

	testenv.Eventually(t, 4*time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(removing) > 0
	}, "no purge round removed runs")
	mu.Lock()
	require.NoError(t, lastErr)
	require.Equal(t, []int{old}, removing, "one round removes every run past the retention period")
	mu.Unlock()

	count := func(q string) int {
		var n int
		require.NoError(t, db.GetContext(ctx, &n, strings.ReplaceAll(q, "{s}", s)))
		return n
	}
	require.Equal(t, 2*kept, count(`SELECT count(*) FROM {s}.runs`))
	require.Zero(t, count(`SELECT count(*) FROM {s}.runs WHERE closed_at < now() - interval '1 day'`))
	for _, tbl := range []string{"steps", "signals", "heartbeats"} {
		q := fmt.Sprintf(`SELECT count(*) FROM {s}.%s x WHERE NOT EXISTS (SELECT 1 FROM {s}.runs r WHERE r.run_id = x.run_id)`, tbl)
		require.Zero(t, count(q), "%s of purged runs are left", tbl)
	}
	require.Equal(t, 2*2*kept, count(`SELECT count(*) FROM {s}.steps`), "steps of kept runs are untouched")
	require.Equal(t, 2*kept/10, count(`SELECT count(*) FROM {s}.signals`))
	require.Equal(t, 2*kept/10, count(`SELECT count(*) FROM {s}.heartbeats`))
}
