package engine_test

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// leSignalWorkflow is a workflow that returns the first "go" signal.
func leSignalWorkflow(name string) *engine.Workflow[int, string] {
	return engine.NewWorkflow(name, func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
}

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
	wf := leSignalWorkflow("leaseend.wf")
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

// A run whose copy unloaded here, and which another worker then claimed
// (a signal made it due at once) before the unload's commit was
// acknowledged to the copy, is not taken for lost by a renewal listing the
// copy: its lease was handed on by that commit, not lost. Such a renewal
// warned "lease lost; stopping the run here" (three runs at once in a
// chaos run, 3.6 s after they started, while snoozed runs unloaded and
// cancellations woke them).
func TestRenewalSeesOwnUnloadTakenOver(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := leSignalWorkflow("leasetaken.wf")
	logs := &dfLog{}
	logs.dumpIfFailed(t)
	e1 := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: time.Minute, UnloadAfter: 100 * time.Millisecond, Logger: slog.New(logs)})
	require.NoError(t, e1.Register(wf))
	// One slot, which the unloading copy holds: w1 cannot claim the run
	// again meanwhile.
	w1 := lsWorker(t, e1, engine.WorkerConfig{ID: "first", MaxWorkflows: 1}, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	// Hold the acknowledgement of w1's next commit, the run's unload.
	var armed atomic.Bool
	armed.Store(true)
	committed, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before the engine's close
	engine.SetLostCommitAckForTest(e1, func() bool {
		if armed.CompareAndSwap(true, false) {
			close(committed)
			<-release
		}
		return false
	})
	// Started where no worker runs, so that w1 claims it and its first
	// commit is its unload.
	starter := testenv.Engine(t, &engine.Config{Schema: schema})
	require.NoError(t, starter.Register(wf))
	run, err := wf.Start(ctx, starter.Client(), 0, &engine.StartOptions{ID: "leasetaken-1"})
	require.NoError(t, err)
	lsRecv(t, ctx, committed)
	require.Equal(t, 1, engine.LoadedRunsForTest(w1), "the unloading copy is still listed")

	e2 := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: time.Minute})
	require.NoError(t, e2.Register(wf))
	lsWorker(t, e2, engine.WorkerConfig{ID: "second"}, nil)
	require.NoError(t, e2.Client().Signal(ctx, "leasetaken-1", "go", "done"))
	q := fmt.Sprintf("%q", schema)
	testenv.Eventually(t, 30*time.Second, func() bool {
		var owner string
		err := e2.DB().QueryRow(`SELECT COALESCE(lease_owner, '') FROM `+q+`.runs WHERE run_id = $1`, run.RunID).Scan(&owner)
		return err == nil && owner == "second"
	}, "the second worker never claimed the run")

	require.NoError(t, engine.RenewForTest(w1))
	released.Do(func() { close(release) })
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w1) == 0 }, "the copy never ended")
	require.Zero(t, logs.count("engine: lease lost"), "lease lost warnings")
}
