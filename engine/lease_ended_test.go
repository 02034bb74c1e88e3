package engine_test

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A lease renewal that finds a run closed (or unloaded) by this worker's
// own copy under its claim, committed but not yet acknowledged to the copy,
// does not take the run for lost: the copy is ending by itself. Such a
// renewal used to report "lease lost; stopping the run here" and abandon
// the copy; the promotion pass (every second, of the runs claimed a second
// ago, which are the ones about to end) made that frequent, and a chaos run
// logged many of these warnings from live workers.
func TestRenewalSeesOwnEnd(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow("leaseend.wf", func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	logs := &dfLog{}
	e := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: time.Minute, UnloadAfter: time.Hour, Logger: slog.New(logs)})
	require.NoError(t, e.Register(wf))
	w := lsWorker(t, e, engine.WorkerConfig{}, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: "leaseend-1"})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == 1 }, "run loaded")
	q := fmt.Sprintf("%q", schema)
	testenv.Eventually(t, 20*time.Second, func() bool {
		var status string
		err := e.DB().QueryRow(`SELECT status FROM `+q+`.runs WHERE run_id = $1`, run.RunID).Scan(&status)
		return err == nil && status == "running"
	}, "run marked running")

	// Hold the acknowledgement of the next commit (the run's end).
	var armed atomic.Bool
	armed.Store(true)
	committed, release := make(chan struct{}), make(chan struct{})
	engine.SetLostCommitAckForTest(e, func() bool {
		if armed.CompareAndSwap(true, false) {
			close(committed)
			<-release
		}
		return false
	})
	require.NoError(t, e.Client().Signal(ctx, "leaseend-1", "go", "done"))
	lsRecv(t, ctx, committed)
	var status string
	require.NoError(t, e.DB().QueryRow(`SELECT status FROM `+q+`.runs WHERE run_id = $1`, run.RunID).Scan(&status))
	require.Equal(t, "completed", status)

	require.NoError(t, engine.RenewForTest(w))
	close(release)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == 0 }, "run unloaded")
	require.Zero(t, logs.count("engine: lease lost"), "lease lost warnings")
}
