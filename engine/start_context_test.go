package engine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A Start whose context ends while its run is being written reports the
// run started (it is), and the run, eagerly taken by the local worker,
// runs: it is not stranded until its lease expires (an hour here).
func TestStartContextEndsDuringTheWrite(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sc.during", func(ctx engine.Context, in int) (int, error) { return in + 1, nil })
	e, c := rbEnv(t, &engine.Config{LeaseTTL: time.Hour}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	engine.SetBeforeCommitForTest(e, cancel)
	run, err := wf.Start(sctx, c, 1, &engine.StartOptions{ID: "during"})
	require.NoError(t, err, "the run was written: Start must say so")
	engine.SetBeforeCommitForTest(e, func() {})
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out)
}

// A Start whose context ends while its run waits behind other writes is
// withdrawn: it reports the context's error and the run never exists.
func TestStartContextEndsWhileQueued(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sc.queued", func(ctx engine.Context, in int) (int, error) { return in + 1, nil })
	// One writer, so the second start queues behind the first.
	e, c := rbEnv(t, &engine.Config{CommitShards: 1}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	engine.SetBeforeCommitForTest(e, func() {
		if first {
			first = false
			close(entered)
			<-release
		}
	})
	blocker := make(chan error, 1)
	go func() {
		_, err := wf.Start(ctx, c, 1, &engine.StartOptions{ID: "blocker"})
		blocker <- err
	}()
	<-entered
	sctx, cancel := context.WithCancel(ctx)
	engine.SetQueuedForTest(e, cancel) // the victim's context ends once it is queued
	victim := make(chan error, 1)
	go func() {
		_, err := wf.Start(sctx, c, 1, &engine.StartOptions{ID: "victim"})
		victim <- err
	}()
	require.ErrorIs(t, <-victim, context.Canceled)
	close(release)
	require.NoError(t, <-blocker)
	ftWaitStatus(t, c, "blocker", engine.StatusCompleted)
	_, err := c.Describe(ctx, "victim")
	require.ErrorIs(t, err, engine.ErrNotFound, "a start reported failed must not happen")
}

// An eager start whose first activity cannot start yet (every activity slot
// of the worker is taken, or an interceptor holds it back) returns once its
// run is written: the insert does not wait for that activity's start.
func TestEagerStartDoesNotWaitForItsFirstActivity(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	var running atomic.Int32
	act := engine.NewActivity("sc.gated", func(ctx context.Context, in int) (int, error) {
		running.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return in + 1, nil
	})
	wf := engine.NewWorkflow("sc.gated.wf", func(ctx engine.Context, in int) (int, error) { return act.Run(ctx, in) })
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{MaxActivities: 1})
	c := e.Client()
	ctx := testenv.Ctx(t, 60*time.Second)
	first, err := wf.Start(ctx, c, 1, &engine.StartOptions{ID: "holds-the-slot"})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() bool { return running.Load() == 1 }, "the first activity never ran")

	// The worker's only activity slot is held until the gate opens, which
	// only this test does, after the start returned.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	second, err := wf.Start(sctx, c, 2, &engine.StartOptions{ID: "waits-for-a-slot"})
	require.NoError(t, err, "the start waited for its first activity's slot")
	info, err := c.Describe(ctx, "waits-for-a-slot")
	require.NoError(t, err)
	require.Equal(t, engine.StatusRunning, info.Status)
	require.Equal(t, int32(1), running.Load(), "the second activity ran beside the first with one slot")

	open()
	for run, want := range map[*engine.Run[int]]int{first: 2, second: 3} {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, want, out)
	}
}
