package graftsync_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/graftdev/graft/engine"
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
	args := append(append([]any{}, fold.Args...), "{run-op-alter,run-op-same,run-op-missing}")
	ph := make([]string, len(args))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	rows, err := ev.db.Query(`SELECT * FROM `+fold.Func+`(`+strings.Join(ph, ", ")+`)`, args...)
	require.NoError(t, err)
	var got []engine.CheckpointFoldRow
	for rows.Next() {
		var r engine.CheckpointFoldRow
		require.NoError(t, rows.Scan(&r.A, &r.B))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
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
