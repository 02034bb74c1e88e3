package engine_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// 50,000 runs past the retention period are removed, with their steps,
// signals and heartbeat details, by one round of the retention loop (in
// bounded batches, read from an index on closed_at); runs closed inside the
// retention period and open runs keep everything.
func TestRetentionPurgesFiftyThousandRunsInOneRound(t *testing.T) {
	t.Parallel()
	const old, kept = 50000, 300
	e := testenv.Engine(t, &engine.Config{Retention: 24 * time.Hour})
	db, s := e.DB(), `"`+e.Schema()+`"`
	ctx := testenv.Ctx(t, 5*time.Minute)
	exec := func(q string, args ...any) {
		t.Helper()
		_, err := db.ExecContext(ctx, strings.ReplaceAll(q, "{s}", s), args...)
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

	// The purge's scan reads the closed_at index, not the whole table.
	var plan []string
	require.NoError(t, db.SelectContext(ctx, &plan, strings.ReplaceAll(`EXPLAIN SELECT run_id FROM {s}.runs
		WHERE closed_at < now() - interval '1 day' ORDER BY closed_at LIMIT 1000 FOR UPDATE SKIP LOCKED`, "{s}", s)))
	require.Contains(t, strings.Join(plan, "\n"), "runs_closed", "purge plan:\n%s", strings.Join(plan, "\n"))

	var rounds, purged atomic.Int64
	var lastErr atomic.Value
	engine.SetPurgeHookForTest(e, time.Hour, func(n int, err error) {
		if err != nil {
			lastErr.Store(err.Error())
		}
		purged.Add(int64(n))
		rounds.Add(1)
	})
	testenv.Eventually(t, 4*time.Minute, func() bool { return rounds.Load() >= 1 }, "no purge round ran")
	require.Nil(t, lastErr.Load())
	require.EqualValues(t, 1, rounds.Load())
	require.EqualValues(t, old, purged.Load(), "one round removes every run past the retention period")

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
