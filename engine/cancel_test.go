package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Cancelling a workflow cancels its running activity's context and the
// workflow's context; cleanup runs in a disconnected context (activities and
// timers included) that cancellation does not touch; the run ends as
// cancelled with the reason; cancelling twice is harmless.
func TestCancelRunningActivityAndCleanup(t *testing.T) {
	t.Parallel()
	var calls ftCounter
	activityCancelled := make(chan error, 1)
	work := engine.NewActivity("cancel.work", func(ctx context.Context, _ struct{}) (string, error) {
		calls.inc("work")
		<-ctx.Done()
		activityCancelled <- ctx.Err()
		return "", ctx.Err()
	})
	cleanup := engine.NewActivity("cancel.cleanup", func(ctx context.Context, reason string) (string, error) {
		calls.inc("cleanup")
		if ctx.Err() != nil {
			return "", errors.New("cleanup context is cancelled")
		}
		return "refunded: " + reason, nil
	})
	wf := engine.NewWorkflow("cancel.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		_, err := work.Run(ctx, struct{}{})
		if err == nil {
			return "", errors.New("want a cancellation")
		}
		var ce *engine.CanceledError
		if !errors.As(err, &ce) || ctx.Err() == nil {
			return "", errors.New("the activity's error and ctx.Err must report the cancellation")
		}
		// Non-disconnected calls now fail at once.
		if err := engine.Sleep(ctx, time.Millisecond); err == nil {
			return "", errors.New("sleep after cancel should fail")
		}
		dctx := engine.Disconnected(ctx)
		if dctx.Err() != nil {
			return "", errors.New("disconnected context reports cancellation")
		}
		if err := engine.Sleep(dctx, 10*time.Millisecond); err != nil {
			return "", err
		}
		if _, err := cleanup.Run(dctx, ce.Reason); err != nil {
			return "", err
		}
		return "", err
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: time.Hour}, work, cleanup, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "order-1"})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool { return calls.get("work") == 1 }, "activity started")

	require.NoError(t, c.Cancel(ctx, "order-1", "customer asked"))
	require.NoError(t, c.Cancel(ctx, "order-1", "second reason is ignored"))
	select {
	case err := <-activityCancelled:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the running activity's context was not cancelled")
	}
	_, err = run.Result(ctx)
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, "customer asked", ce.Reason)
	require.True(t, errors.Is(err, &engine.CanceledError{}))

	info := ftDescribe(t, c, "order-1")
	require.Equal(t, engine.StatusCancelled, info.Status)
	require.True(t, info.CancelRequested)
	require.Equal(t, 1, calls.get("cleanup"))
	require.Equal(t, 1, calls.get("work"), "a cancelled activity is not retried")

	// Cancelling a cancelled workflow is harmless.
	require.NoError(t, c.Cancel(ctx, "order-1", "again"))
	h, err := c.History(ctx, "order-1")
	require.NoError(t, err)
	var kinds []string
	for _, st := range h[0].Steps {
		kinds = append(kinds, st.Kind+":"+st.Status)
	}
	require.Contains(t, kinds, "cancel:completed")
	require.Contains(t, kinds, "activity:completed") // the cleanup
}

// A cancellation reaches an unloaded workflow: it is woken, replays, sees the
// cancellation at its wait, and cleans up.
func TestCancelWhileUnloaded(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	var calls ftCounter
	cleanup := engine.NewActivity("cancelu.cleanup", func(ctx context.Context, _ struct{}) (struct{}, error) {
		calls.inc("cleanup")
		return struct{}{}, ctx.Err()
	})
	wf := engine.NewWorkflow("cancelu.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		err := engine.Sleep(ctx, 7*24*time.Hour)
		if err == nil {
			return "slept", nil
		}
		if _, cerr := cleanup.Run(engine.Disconnected(ctx), struct{}{}); cerr != nil {
			return "", cerr
		}
		return "", err
	})
	_, c := ftEnv(t, &engine.Config{Clock: clock}, cleanup, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "sleeper"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "sleeper", 1)
	require.NoError(t, c.Cancel(ctx, "sleeper", "no longer needed"))
	_, err = run.Result(ctx)
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, "no longer needed", ce.Reason)
	require.Equal(t, 1, calls.get("cleanup"))
	require.Equal(t, engine.StatusCancelled, ftDescribe(t, c, "sleeper").Status)
}

// A workflow cancelled before any worker picked it up ends cancelled at its
// first step.
func TestCancelPendingRun(t *testing.T) {
	t.Parallel()
	var calls ftCounter
	act := engine.NewActivity("cancelp.act", func(ctx context.Context, _ struct{}) (struct{}, error) {
		calls.inc("act")
		return struct{}{}, nil
	})
	wf := engine.NewWorkflow("cancelp.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		_, err := act.Run(ctx, struct{}{})
		return "ran", err
	})
	_, c := ftEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "later", Delay: time.Hour})
	require.NoError(t, err)
	require.Equal(t, engine.StatusPending, ftDescribe(t, c, "later").Status)
	require.NoError(t, c.Cancel(ctx, "later", "changed my mind"))
	_, err = run.Result(ctx)
	require.True(t, errors.Is(err, &engine.CanceledError{}), "got %v", err)
	require.Equal(t, 0, calls.get("act"))
	require.Equal(t, engine.StatusCancelled, ftDescribe(t, c, "later").Status)
}

// Cancel refuses unknown and completed workflows with sentinel errors.
func TestCancelErrors(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("cancele.wf", func(ctx engine.Context, _ struct{}) (int, error) { return 1, nil })
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	require.ErrorIs(t, c.Cancel(ctx, "ghost", "x"), engine.ErrNotFound)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "done"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, c.Cancel(ctx, "done", "x"), engine.ErrNotRunning)
}

// A workflow that ignores its cancellation and returns normally completes:
// cancellation is a request the workflow code may decline.
func TestCancelHandledByWorkflow(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("cancelh.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		_, err := engine.GetSignalChannel[int](ctx, "never").Receive(ctx)
		if err != nil {
			return "handled: " + err.Error(), nil
		}
		return "signalled", nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "decline"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "decline", 1)
	require.NoError(t, c.Cancel(ctx, "decline", "please"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "handled: canceled: please", out)
	require.Equal(t, engine.StatusCompleted, ftDescribe(t, c, "decline").Status)
}

// The point at which a workflow observed its cancellation is part of the
// record: when the run is replayed during its cleanup, an activity whose
// result the workflow had already received returns that result again, and
// the cancellation is seen at the same later step as the first time.
func TestCancelReplayKeepsObservationPoint(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	var calls ftCounter
	bgCancelled := make(chan struct{})
	afterFirst := make(chan struct{})
	goAhead := make(chan struct{})
	blocker := engine.NewActivity("cancelr.blocker", func(ctx context.Context, _ struct{}) (struct{}, error) {
		<-ctx.Done()
		close(bgCancelled)
		return struct{}{}, ctx.Err()
	})
	first := engine.NewActivity("cancelr.first", func(ctx context.Context, _ struct{}) (string, error) {
		calls.inc("first")
		return "ok", nil
	})
	second := engine.NewActivity("cancelr.second", func(ctx context.Context, _ struct{}) (string, error) {
		calls.inc("second")
		return "ok", nil
	})
	cleanup := engine.NewActivity("cancelr.cleanup", func(ctx context.Context, _ struct{}) (struct{}, error) {
		calls.inc("cleanup")
		return struct{}{}, nil
	})
	wf := engine.NewWorkflow("cancelr.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		bg := blocker.Start(ctx, struct{}{})
		if _, err := first.Run(ctx, struct{}{}); err != nil {
			return "", errors.New("first activity failed: " + err.Error())
		}
		if !engine.IsReplaying(ctx) {
			afterFirst <- struct{}{}
			<-goAhead
		}
		_, err := second.Run(ctx, struct{}{})
		if err == nil {
			return "", errors.New("want the cancellation at the second activity")
		}
		dctx := engine.Disconnected(ctx)
		_, _ = bg.Get(dctx)
		if err := engine.Sleep(dctx, time.Hour); err != nil { // unloads: the rest runs after a replay
			return "", err
		}
		if _, cerr := cleanup.Run(dctx, struct{}{}); cerr != nil {
			return "", cerr
		}
		return "", err
	})
	_, c := ftEnv(t, &engine.Config{Clock: clock}, blocker, first, second, cleanup, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "obs"})
	require.NoError(t, err)
	<-afterFirst
	require.NoError(t, c.Cancel(ctx, "obs", "stop"))
	<-bgCancelled // the run has seen the request
	close(goAhead)
	ftWaitUnloaded(t, c, "obs", 1)
	clock.Advance(time.Hour)
	_, err = run.Result(ctx)
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, "stop", ce.Reason)
	require.Equal(t, 1, calls.get("first"))
	require.Equal(t, 0, calls.get("second"))
	require.Equal(t, 1, calls.get("cleanup"))
}

// A cancellation requested while a run is continuing as new, which the run
// never observed, carries to the new run: the loop stops.
func TestCancelRacingContinueAsNew(t *testing.T) {
	t.Parallel()
	inFinal := make(chan struct{}, 1)
	release := make(chan struct{})
	var loop *engine.Workflow[int, int]
	loop = engine.NewWorkflow("cancelcan.loop", func(ctx engine.Context, n int) (int, error) {
		if _, err := engine.GetSignalChannel[int](ctx, "next").Receive(ctx); err != nil {
			return n, err
		}
		// Between the last cancellation point and the continue-as-new.
		if _, err := engine.SideEffect(ctx, "pause", func() (int, error) {
			if n == 0 {
				inFinal <- struct{}{}
				<-release
			}
			return n, nil
		}); err != nil {
			return n, err
		}
		return 0, engine.ContinueAsNew(ctx, loop, n+1)
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: time.Hour}, loop)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := loop.Start(ctx, c, 0, &engine.StartOptions{ID: "cancel-can"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "cancel-can", "next", 1))
	<-inFinal
	require.NoError(t, c.Cancel(ctx, "cancel-can", "stop the loop"))
	close(release)
	_, err = run.Result(ctx)
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, "stop the loop", ce.Reason)
	h, err := c.History(ctx, "cancel-can")
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, engine.StatusContinued, h[0].Run.Status)
	require.Equal(t, engine.StatusCancelled, h[1].Run.Status)
}
