package graftsync_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	graftsync "github.com/graftdev/graft/sync"
)

// TestFoldedWriteAccounts runs a folded write the way the engine does (the
// fold's function, then Done with its rows) over a batch of four rows: one
// the change alters, one it leaves as it is, one missing, and one of a run
// the statement did not write. The rows and the metrics show exactly that:
// one row written, one missing, the others untouched and uncounted.
func TestFoldedWriteAccounts(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	ev := newEnv(t, envOpts{mapping: guarded("version", nil), noWorker: true, config: func(c *graftsync.Config) {
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	}})
	for _, id := range []string{"op-alter", "op-same", "op-lost"} {
		ev.insertRow(id)
	}
	// op-same already shows what its change says.
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'doing', step = 'checking', attempts = 1, progress = 25 WHERE id = 'op-same'`)
	now := time.Now()
	act := func(wf string) *engine.CheckpointEvent {
		return &engine.CheckpointEvent{Kind: engine.CheckpointActivityCompleted, WorkflowID: wf, RunID: "run-" + wf,
			WorkflowType: "renewal", Status: engine.StatusRunning, Seq: 1, ActivityName: "renew.check", Attempt: 1, At: now}
	}
	evs := []*engine.CheckpointEvent{act("op-alter"), act("op-same"), act("op-missing"), act("op-lost")}
	fold, ok := ev.mr.FoldCheckpoint(context.Background(), evs)
	require.True(t, ok)
	require.NotNil(t, fold)

	// The engine's statement wrote every run but op-lost's.
	got, err := callFold(context.Background(), ev.db, fold, "{run-op-alter,run-op-same,run-op-missing}")
	require.NoError(t, err)
	fold.Done(context.Background(), got)

	r, _ := ev.row("op-alter")
	require.Equal(t, "doing", r.Status)
	require.Equal(t, "checking", r.Step.String)
	require.True(t, r.UpdatedAt.Equal(now.Round(time.Microsecond)), "updated_at %v is the event's time %v", r.UpdatedAt, now)
	r, _ = ev.row("op-lost")
	require.Equal(t, "todo", r.Status, "its run was not written")
	var version *int64
	require.NoError(t, ev.ldb.QueryRow(`SELECT row_version FROM `+ev.qtable()+` WHERE id = 'op-same'`).Scan(&version))
	require.Nil(t, version, "a change that alters nothing writes nothing")

	m := readMetrics(t, reader)
	require.Equal(t, 1.0, m[graftsync.MetricRowsWritten], "written: op-alter")
	require.Equal(t, 1.0, m[graftsync.MetricRowsMissing], "missing: op-missing")
	require.Zero(t, m[graftsync.MetricStale])
}

// TestFoldWritesAfterAConcurrentLegacyWrite: a legacy transaction that
// changes a row while the folded write is under way (after the statement's
// snapshot, before its update) holds the row; the mirror's update waits
// for it, then judges the row as the legacy transaction left it and writes
// the workflow's state over it, in the same statement. The fold must find
// the row to update by its key: an update at the position (ctid) the
// snapshot showed is skipped once the legacy write has moved the row
// (PostgreSQL does not follow a concurrently updated row to a position the
// statement did not ask for), and the row would show the legacy write
// until the workflow's next change.
func TestFoldWritesAfterAConcurrentLegacyWrite(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: guarded("version", nil), noWorker: true})
	ev.insertRow("op-1")
	ctx := testenv.Ctx(t, time.Minute)
	legacy, err := ev.ldb.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer legacy.Rollback()
	_, err = legacy.Exec(`UPDATE ` + ev.qtable() + ` SET status = 'legacy' WHERE id = 'op-1'`)
	require.NoError(t, err)
	var pid int
	require.NoError(t, legacy.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))

	evs := []*engine.CheckpointEvent{{Kind: engine.CheckpointActivityCompleted, WorkflowID: "op-1", RunID: "run-op-1",
		WorkflowType: "renewal", Status: engine.StatusRunning, Seq: 1, ActivityName: "renew.check", Attempt: 1, At: time.Now()}}
	fold, ok := ev.mr.FoldCheckpoint(ctx, evs)
	require.True(t, ok)
	type result struct {
		rows []engine.CheckpointFoldRow
		err  error
	}
	done := make(chan result, 1)
	go func() {
		rows, err := callFold(ctx, ev.db, fold, "{run-op-1}")
		done <- result{rows, err}
	}()
	testenv.Eventually(t, 20*time.Second, func() bool {
		var waiting int
		err := ev.ldb.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the folded write never waited for the legacy transaction")
	require.NoError(t, legacy.Commit())
	res := <-done
	require.NoError(t, res.err)
	require.Contains(t, res.rows, engine.CheckpointFoldRow{A: "w", B: "1"}, "one row written")
	r, _ := ev.row("op-1")
	require.Equal(t, "doing", r.Status, "the workflow's state, written after the legacy write")
	require.Equal(t, "checking", r.Step.String)
}

// TestFoldRefusesRowsWithQueuedChanges: a folded write of a row whose
// earlier changes wait in the outbox fails the statement (SQLSTATE GS001),
// writing nothing, so the engine writes the batch again through
// Checkpoint, which queues the change behind them; a batch of other rows
// goes through while they wait.
func TestFoldRefusesRowsWithQueuedChanges(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: guarded("version", nil), noWorker: true})
	ev.insertRow("op-queued")
	ev.insertRow("op-free")
	ev.exec(`INSERT INTO ` + pq.QuoteIdentifier(ev.graft) + `.mirror_outbox (mapping, row_key, first_ord, last_ord, change)
		VALUES ('` + ev.table + `', 'op-queued', 1, 1, '{}')`)
	ctx := testenv.Ctx(t, time.Minute)
	act := func(wf string) *engine.CheckpointEvent {
		return &engine.CheckpointEvent{Kind: engine.CheckpointActivityCompleted, WorkflowID: wf, RunID: "run-" + wf,
			WorkflowType: "renewal", Status: engine.StatusRunning, Seq: 1, ActivityName: "renew.check", Attempt: 1, At: time.Now()}
	}
	fold, ok := ev.mr.FoldCheckpoint(ctx, []*engine.CheckpointEvent{act("op-free"), act("op-queued")})
	require.True(t, ok)
	_, err := callFold(ctx, ev.db, fold, "{run-op-free,run-op-queued}")
	var pe *pq.Error
	require.ErrorAs(t, err, &pe)
	require.EqualValues(t, "GS001", pe.Code, "%v", err)
	for _, id := range []string{"op-free", "op-queued"} {
		r, _ := ev.row(id)
		require.Equal(t, "todo", r.Status, "%s: nothing written", id)
	}

	fold, ok = ev.mr.FoldCheckpoint(ctx, []*engine.CheckpointEvent{act("op-free")})
	require.True(t, ok)
	rows, err := callFold(ctx, ev.db, fold, "{run-op-free}")
	require.NoError(t, err)
	require.Contains(t, rows, engine.CheckpointFoldRow{A: "w", B: "1"})
	r, _ := ev.row("op-free")
	require.Equal(t, "doing", r.Status)
}

// callFold runs a fold's function as the engine's statement does, with
// written as the runs the statement wrote, and returns its rows.
func callFold(ctx context.Context, db *sqlx.DB, fold *engine.CheckpointFold, written string) ([]engine.CheckpointFoldRow, error) {
	args := append(append([]any{}, fold.Args...), written)
	ph := make([]string, len(args))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	rows, err := db.QueryContext(ctx, `SELECT * FROM `+fold.Func+`(`+strings.Join(ph, ", ")+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var got []engine.CheckpointFoldRow
	for rows.Next() {
		var r engine.CheckpointFoldRow
		if err := rows.Scan(&r.A, &r.B); err != nil {
			return nil, err
		}
		got = append(got, r)
	}
	return got, rows.Err()
}

// TestFoldSkipsAChangeThatAltersNothing: a run's change that would leave
// the row as the run's previous change left it (the same step, attempts,
// status), when this process folded that change and saw it commit, is not
// looked up: a legacy write since then shows until the run's next change
// that alters the row, which judges the row as usual. A skipped change
// whose run the statement did not write (a lost lease) is forgotten: the
// run's next change is looked up again.
func TestFoldSkipsAChangeThatAltersNothing(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: guarded("version", nil), noWorker: true})
	ev.insertRow("op-1")
	ctx := testenv.Ctx(t, time.Minute)
	act := func(seq int, name string) []*engine.CheckpointEvent {
		return []*engine.CheckpointEvent{{Kind: engine.CheckpointActivityCompleted, WorkflowID: "op-1", RunID: "run-op-1",
			WorkflowType: "renewal", Status: engine.StatusRunning, Seq: seq, ActivityName: name, Attempt: 1, At: time.Now()}}
	}
	fold := func(evs []*engine.CheckpointEvent, written string) []engine.CheckpointFoldRow {
		t.Helper()
		f, ok := ev.mr.FoldCheckpoint(ctx, evs)
		require.True(t, ok)
		rows, err := callFold(ctx, ev.db, f, written)
		require.NoError(t, err)
		if written == "{}" {
			f.Unwritten([]string{"run-op-1"}) // as the engine tells it
		}
		f.Done(ctx, rows)
		return rows
	}
	status := func() string {
		t.Helper()
		r, found := ev.row("op-1")
		require.True(t, found)
		return r.Status
	}
	fold(act(1, "renew.check"), "{run-op-1}")
	require.Equal(t, "doing", status())

	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'legacy' WHERE id = 'op-1'`)
	rows := fold(act(2, "renew.check"), "{run-op-1}")
	require.Empty(t, rows, "nothing written, nothing missing")
	require.Equal(t, "legacy", status(), "the same step again: not looked up")
	fold(act(3, "renew.charge"), "{run-op-1}")
	r, _ := ev.row("op-1")
	require.Equal(t, "doing", r.Status, "the next change judges the row")
	require.Equal(t, "charging", r.Step.String)

	// Not skipped: the previous change's Seq is not just before.
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'legacy' WHERE id = 'op-1'`)
	fold(act(5, "renew.charge"), "{run-op-1}")
	require.Equal(t, "doing", status(), "a gap in the run's events: looked up")

	// Skipped, but the statement did not write the run (the engine's
	// Unwritten says so; the statement is not sent the skipped change):
	// forgotten.
	rows = fold(act(6, "renew.charge"), "{}")
	require.Empty(t, rows)
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'legacy' WHERE id = 'op-1'`)
	fold(act(7, "renew.charge"), "{run-op-1}")
	require.Equal(t, "doing", status(), "after an unwritten run: looked up")

	// A change written through Checkpoint (a fold refused) is forgotten.
	require.NoError(t, ev.mr.Checkpoint(ctx, ev.db, act(8, "renew.charge")))
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'legacy' WHERE id = 'op-1'`)
	fold(act(9, "renew.charge"), "{run-op-1}")
	require.Equal(t, "doing", status(), "after Checkpoint: looked up")
}
