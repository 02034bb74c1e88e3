package engine_test

import (
	"context"
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
