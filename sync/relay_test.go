package graftsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	graftsync "github.com/graftdev/graft/sync"
)

// readMetrics collects the mirror's metrics: sums of counters and the last
// value of gauges, by name.
func readMetrics(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] += float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] = p.Value
				}
			}
		}
	}
	return out
}

// TestSeparateDatabase mirrors through the outbox and the relay into a
// table in another database.
func TestSeparateDatabase(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	ev := newEnv(t, envOpts{separate: true, config: func(c *graftsync.Config) {
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	}})
	ev.insertRow("op-1")
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com", Years: 1, ChargeFailures: 1}, nil))
	require.NoError(t, err)
	r := ev.waitStatus("op-1", "done")
	require.Equal(t, "registering", r.Step.String)
	require.Equal(t, "R-a.com", r.Ref.String)
	require.Equal(t, time.Date(2031, 3, 1, 0, 0, 0, 0, time.UTC), r.ExpiresAt.Time.UTC())
	// graft's own database holds no mirror_state; the legacy one does.
	_, _, ok := ev.state("op-1")
	require.True(t, ok)
	var n int
	require.NoError(t, ev.db.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'mirror_state'`, ev.graft).Scan(&n))
	require.Zero(t, n)
	testenv.Eventually(t, 10*time.Second, func() bool {
		m := readMetrics(t, reader)
		return m[graftsync.MetricRelayLag] == 0 && m[graftsync.MetricRelayDelivered] >= 1
	}, "relay metrics")
}

// outboxRow is a change as the outbox holds it.
type outboxRow struct {
	key         string
	first, last int64
	change      string
}

func (ev *env) outbox() []outboxRow {
	ev.t.Helper()
	rows, err := ev.db.Query(`SELECT row_key, first_ord, last_ord, change::text FROM ` + pq.QuoteIdentifier(ev.graft) + `.mirror_outbox ORDER BY id`)
	require.NoError(ev.t, err)
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		require.NoError(ev.t, rows.Scan(&r.key, &r.first, &r.last, &r.change))
		out = append(out, r)
	}
	return out
}

func (ev *env) enqueue(rs ...outboxRow) {
	ev.t.Helper()
	for _, r := range rs {
		ev.execGraft(`INSERT INTO `+pq.QuoteIdentifier(ev.graft)+`.mirror_outbox (mapping, row_key, first_ord, last_ord, change)
			VALUES ($1, $2, $3, $4, $5::jsonb)`, ev.table, r.key, r.first, r.last, r.change)
	}
}

func (ev *env) execGraft(q string, args ...any) {
	ev.t.Helper()
	_, err := ev.db.Exec(q, args...)
	require.NoError(ev.t, err)
}

// relayAll runs relay rounds until the outbox is empty.
func (ev *env) relayAll() {
	ev.t.Helper()
	testenv.Eventually(ev.t, 10*time.Second, func() bool {
		_, err := ev.mr.RelayOnce(context.Background())
		require.NoError(ev.t, err)
		return len(ev.outbox()) == 0
	}, "outbox not drained")
}

// TestRelayNeverRegresses delivers a workflow's changes twice, in reverse
// order, and its last change before the earlier ones: the row keeps the
// newest state every time.
func TestRelayNeverRegresses(t *testing.T) {
	t.Parallel()
	for _, g := range guards {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			reader := sdkmetric.NewManualReader()
			ev := newEnv(t, envOpts{separate: true, noStart: true, mapping: guarded(g, nil), config: func(c *graftsync.Config) {
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			}})
			for _, id := range []string{"op-1", "op-2"} {
				ev.insertRow(id)
				ev.start(id, renewal{Domain: id + ".com", Confirm: true}, nil)
				ev.waitEngine(id, engine.StatusWaiting)
			}
			// Nothing is delivered without the relay; the workflows run regardless.
			r, _ := ev.row("op-1")
			require.Equal(t, "todo", r.Status)
			for _, id := range []string{"op-1", "op-2"} {
				require.NoError(t, ev.c.Signal(context.Background(), id, "confirm", true))
				ev.waitEngine(id, engine.StatusCompleted)
			}
			changes := ev.outbox()
			require.GreaterOrEqual(t, len(changes), 4)
			var one, two []outboxRow
			for _, c := range changes {
				if c.key == "op-1" {
					one = append(one, c)
				} else {
					two = append(two, c)
				}
			}

			// op-1: delivered, then every change again, newest first.
			ev.execGraft(`DELETE FROM ` + pq.QuoteIdentifier(ev.graft) + `.mirror_outbox WHERE row_key = 'op-2'`)
			ev.relayAll()
			done := ev.waitStatus("op-1", "done")
			ord := ev.position("op-1")
			for i := len(one) - 1; i >= 0; i-- {
				ev.enqueue(one[i])
			}
			ev.relayAll()
			r, _ = ev.row("op-1")
			require.Equal(t, done, r, "duplicates changed nothing")
			require.Equal(t, ord, ev.position("op-1"))

			// op-2: the last change arrives first, the earlier ones late.
			ev.enqueue(two[len(two)-1])
			ev.relayAll()
			done = ev.waitStatus("op-2", "done")
			ev.enqueue(two[:len(two)-1]...)
			ev.relayAll()
			r, _ = ev.row("op-2")
			require.Equal(t, done, r, "late changes changed nothing")
			require.GreaterOrEqual(t, readMetrics(t, reader)[graftsync.MetricStale], float64(len(one)+len(two)-1))
		})
	}
}

// TestSameDatabaseDropsLateEvents hands the interceptor, in a checkpoint
// transaction of its own, events of a run that has ended (an activity the
// workflow left running, a repeated start): the row keeps the run's end. A
// new run of the same workflow ID moves the row on.
func TestSameDatabaseDropsLateEvents(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com"}, nil))
	require.NoError(t, err)
	done := ev.waitStatus("op-1", "done")
	info, err := ev.c.Describe(context.Background(), "op-1")
	require.NoError(t, err)

	checkpoint := func(evs ...*engine.CheckpointEvent) {
		t.Helper()
		tx, err := ev.db.BeginTx(context.Background(), nil)
		require.NoError(t, err)
		defer tx.Rollback()
		require.NoError(t, ev.mr.Checkpoint(context.Background(), tx, evs))
		require.NoError(t, tx.Commit())
	}
	late := &engine.CheckpointEvent{Kind: engine.CheckpointActivityFailed, WorkflowID: "op-1", RunID: info.RunID, WorkflowType: "renewal",
		Status: engine.StatusRunning, Seq: 9, ActivityName: "renew.charge", Attempt: 5, Err: fmt.Errorf("late"), At: time.Now()}
	again := &engine.CheckpointEvent{Kind: engine.CheckpointWorkflowStarted, WorkflowID: "op-1", RunID: info.RunID, WorkflowType: "renewal",
		Status: engine.StatusPending, Input: renewal{}, At: time.Now()}
	checkpoint(late, again)
	r, _ := ev.row("op-1")
	require.Equal(t, done, r)

	next := *again
	next.RunID = "a-new-run"
	checkpoint(&next)
	ev.waitStatus("op-1", "todo")
}

// TestRefusedRowIsRetriedAlone: a row whose update the legacy database
// refuses (a trigger of the back office) does not hold the workflow back:
// in same-database mode its changes go to the outbox in the checkpoint
// transaction; in both modes the relay retries them on their own with
// backoff while other rows are delivered, and they go through once the
// cause is gone. The lag gauge shows the wait.
func TestRefusedRowIsRetriedAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range modes() {
		separate := tc.separate
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reader := sdkmetric.NewManualReader()
			ev := newEnv(t, envOpts{separate: separate, mapping: guarded(tc.guard, nil), config: func(c *graftsync.Config) {
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			}})
			s := pq.QuoteIdentifier(ev.legacy)
			ev.exec(`CREATE TABLE ` + s + `.locked (id text PRIMARY KEY);
				CREATE FUNCTION ` + s + `.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
					IF EXISTS (SELECT 1 FROM ` + s + `.locked l WHERE l.id = NEW.id) THEN
						RAISE EXCEPTION 'operation % is locked by the back office', NEW.id;
					END IF;
					RETURN NEW;
				END $$;
				CREATE TRIGGER refuse BEFORE UPDATE ON ` + s + `.operations FOR EACH ROW EXECUTE FUNCTION ` + s + `.refuse();
				INSERT INTO ` + s + `.locked VALUES ('op-bad')`)
			ev.insertRow("op-bad")
			ev.insertRow("op-good")
			bad := ev.start("op-bad", renewal{Domain: "bad.com", Confirm: true}, nil)
			_, err := ev.result(ev.start("op-good", renewal{Domain: "good.com"}, nil))
			require.NoError(t, err)
			ev.waitStatus("op-good", "done")
			// The refused row's workflow is not held back either.
			ev.waitEngine("op-bad", engine.StatusWaiting)
			require.NoError(t, ev.c.Signal(context.Background(), "op-bad", "confirm", true))
			_, err = ev.result(bad)
			require.NoError(t, err)
			hist, err := ev.c.History(context.Background(), "op-bad")
			require.NoError(t, err)
			require.Len(t, hist, 1)
			require.Equal(t, 2, hist[0].Run.Loads, "loaded at the start and after the signal, never dropped and replayed")

			var attempts int
			var lastErr sql.NullString
			testenv.Eventually(t, 10*time.Second, func() bool {
				err := ev.db.QueryRow(`SELECT max(attempts), max(last_error) FROM `+pq.QuoteIdentifier(ev.graft)+`.mirror_outbox WHERE row_key = 'op-bad'`).Scan(&attempts, &lastErr)
				return err == nil && attempts >= 2
			}, "op-bad retried")
			require.Contains(t, lastErr.String, "operation op-bad is locked by the back office")
			r, _ := ev.row("op-bad")
			require.Equal(t, "todo", r.Status)
			testenv.Eventually(t, 10*time.Second, func() bool { return readMetrics(t, reader)[graftsync.MetricRelayLag] > 0 }, "lag shows")

			ev.exec(`DELETE FROM ` + s + `.locked`)
			r = ev.waitStatus("op-bad", "done")
			require.Equal(t, "registering", r.Step.String)
			testenv.Eventually(t, 10*time.Second, func() bool {
				m := readMetrics(t, reader)
				return m[graftsync.MetricRelayLag] == 0 && m[graftsync.MetricRelayErrors] >= 2
			}, "lag back to 0")
			if !separate {
				require.Positive(t, readMetrics(t, reader)[graftsync.MetricQueued])
			}
		})
	}
}
