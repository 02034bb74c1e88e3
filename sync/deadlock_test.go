package graftsync_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	graftsync "github.com/graftdev/graft/sync"
)

// TestDeadlockedMirrorWriteIsRetried: graft cannot order its writes of
// legacy rows against the legacy application's own statements. A mirror
// write of two rows that deadlocks (40P01) with a legacy transaction
// holding one of them and then taking the other is not lost: in
// same-database mode its changes go to the outbox in the checkpoint
// transaction, and the relay (in both modes) delivers them again; the
// legacy transaction's own write stays.
func TestDeadlockedMirrorWriteIsRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range modes() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reader := sdkmetric.NewManualReader()
			ev := newEnv(t, envOpts{separate: tc.separate, mapping: guarded(tc.guard, nil), noWorker: true, config: func(c *graftsync.Config) {
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			}})
			ev.insertRow("op-1")
			ev.insertRow("op-2")
			ctx := testenv.Ctx(t, time.Minute)

			// The legacy transaction holds op-2; it waits longer than the
			// mirror before it looks for a deadlock, so the mirror's write
			// is the one PostgreSQL cancels.
			legacy, err := ev.ldb.BeginTxx(ctx, nil)
			require.NoError(t, err)
			defer legacy.Rollback()
			_, err = legacy.Exec(`SET LOCAL deadlock_timeout = '30s'`)
			require.NoError(t, err)
			_, err = legacy.Exec(`UPDATE ` + ev.qtable() + ` SET customer = 'legacy' WHERE id = 'op-2'`)
			require.NoError(t, err)
			var pid int
			require.NoError(t, legacy.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))
			deadlocks := legacyDeadlocks(t, ev)

			// The mirror writes op-1, then waits for op-2: in the checkpoint
			// transaction (same database), or in the relay's delivery.
			wrote := make(chan error, 1)
			go func() {
				wrote <- checkpointIn(ctx, ev.db, ev.mr, closedEvent("op-1"), closedEvent("op-2"))
			}()
			testenv.Eventually(t, 20*time.Second, func() bool {
				var waiting int
				err := ev.ldb.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting)
				return err == nil && waiting > 0
			}, "the mirror never waited for op-2")
			_, err = legacy.Exec(`UPDATE ` + ev.qtable() + ` SET customer = 'legacy' WHERE id = 'op-1'`)
			require.NoError(t, err, "the legacy transaction")
			require.NoError(t, legacy.Commit())
			require.NoError(t, <-wrote, "the checkpoint")

			for _, id := range []string{"op-1", "op-2"} {
				r := ev.waitStatus(id, "done")
				require.Equal(t, "legacy", r.Customer.String, "%s: the legacy transaction's write", id)
			}
			testenv.Eventually(t, 20*time.Second, func() bool { return legacyDeadlocks(t, ev) > deadlocks }, "no deadlock counted")
			if !tc.separate {
				require.Equal(t, 2.0, readMetrics(t, reader)[graftsync.MetricQueued], "the checkpoint's changes went to the outbox")
			}
		})
	}
}

// legacyDeadlocks is the number of deadlocks PostgreSQL has counted in
// the legacy database (the relay's deliveries retry a deadlocked batch
// row by row and say nothing of it).
func legacyDeadlocks(t *testing.T, ev *env) int64 {
	var n int64
	require.NoError(t, ev.ldb.QueryRow(`SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n))
	return n
}

// checkpointIn calls the mirror's Checkpoint with evs in a transaction of
// graft's database and commits it.
func checkpointIn(ctx context.Context, db *sqlx.DB, mr *graftsync.Mirror, evs ...*engine.CheckpointEvent) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := mr.Checkpoint(ctx, tx, evs); err != nil {
		return err
	}
	return tx.Commit()
}

// closedEvent is the completion of a renewal run of workflow id.
func closedEvent(id string) *engine.CheckpointEvent {
	return &engine.CheckpointEvent{Kind: engine.CheckpointWorkflowClosed, WorkflowID: id, RunID: "run-" + id, WorkflowType: "renewal",
		Status: engine.StatusCompleted, Result: "R-" + id, At: time.Now()}
}
