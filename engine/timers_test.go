package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A 30-day sleep under a fake clock: the run unloads at once (its timer is
// further than UnloadAfter), records its wake time, and is resumed by replay
// when the clock is advanced past it.
func TestTimerThirtyDaysWithFakeClock(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	var ran ftCounter
	wf := engine.NewWorkflow("timer.trial", func(ctx engine.Context, in string) (time.Time, error) {
		ran.inc("body")
		start := engine.Now(ctx)
		if err := engine.Sleep(ctx, 30*24*time.Hour); err != nil {
			return time.Time{}, err
		}
		end := engine.Now(ctx)
		require.True(t, end.Sub(start) >= 30*24*time.Hour, "woke after %v", end.Sub(start))
		return end, nil
	})
	// probe is due whenever it is started: once the worker has claimed and
	// run it, the worker has looked for due work after the clock last
	// moved. It is started from an engine with no worker, so it is claimed
	// like any due run rather than started eagerly.
	probe := engine.NewWorkflow("timer.probe", func(ctx engine.Context, _ struct{}) (int, error) { return 1, nil })
	e, c := ftEnv(t, &engine.Config{Clock: clock}, wf, probe)
	starter := testenv.Engine(t, &engine.Config{Schema: e.Schema(), Clock: clock})
	require.NoError(t, starter.Register(probe))
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, "trial-1", &engine.StartOptions{ID: "trial-1"})
	require.NoError(t, err)

	info := ftWaitUnloaded(t, c, "trial-1", 1)
	require.True(t, info.WakeAt.Equal(ftT0.Add(30*24*time.Hour)), "wake_at %v", info.WakeAt)

	clock.Advance(29 * 24 * time.Hour)
	// A premature wake-up would be claimed with the probe, or before it.
	p, err := probe.Start(ctx, starter.Client(), struct{}{}, &engine.StartOptions{ID: "probe"})
	require.NoError(t, err)
	_, err = p.Result(ctx)
	require.NoError(t, err)
	info = ftDescribe(t, c, "trial-1")
	require.Equal(t, engine.StatusWaiting, info.Status)
	require.Equal(t, 1, info.Loads, "not woken before its time")
	timerStep := func() engine.StepInfo {
		h, err := c.History(ctx, "trial-1")
		require.NoError(t, err)
		for _, st := range h[0].Steps {
			if st.Kind == "timer" {
				return st
			}
		}
		t.Fatal("no timer step")
		return engine.StepInfo{}
	}
	require.Equal(t, "started", timerStep().Status, "a timer not yet due")

	clock.Advance(24 * time.Hour)
	end, err := run.Result(ctx)
	require.NoError(t, err)
	require.True(t, end.Equal(ftT0.Add(30*24*time.Hour)), "ended at %v", end)
	info = ftDescribe(t, c, "trial-1")
	require.Equal(t, engine.StatusCompleted, info.Status)
	fired := timerStep()
	require.Equal(t, "completed", fired.Status, "a timer that came due shows as completed")
	require.True(t, fired.CompletedAt.Equal(ftT0.Add(30*24*time.Hour)), "completed at its fire time, got %v", fired.CompletedAt)
	require.GreaterOrEqual(t, info.Loads, 2, "resumed by replay")
	require.GreaterOrEqual(t, ran.get("body"), 2)
}

// A short real-clock sleep stays loaded (its timer is within UnloadAfter)
// and completes.
func TestTimerShortSleepStaysLoaded(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("timer.short", func(ctx engine.Context, d time.Duration) (string, error) {
		if err := engine.Sleep(ctx, d); err != nil {
			return "", err
		}
		return "done", nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 5 * time.Second}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	t0 := time.Now()
	run, err := wf.Start(ctx, c, 300*time.Millisecond, &engine.StartOptions{ID: "short"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	require.GreaterOrEqual(t, time.Since(t0), 300*time.Millisecond)
	require.Equal(t, 1, ftDescribe(t, c, "short").Loads, "never unloaded")
}

// A real-clock sleep longer than UnloadAfter unloads and is resumed by the
// worker when due.
func TestTimerRealClockUnloadsAndResumes(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("timer.real", func(ctx engine.Context, d time.Duration) (int, error) {
		if err := engine.Sleep(ctx, d); err != nil {
			return 0, err
		}
		return 1, nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	t0 := time.Now()
	run, err := wf.Start(ctx, c, 1500*time.Millisecond, &engine.StartOptions{ID: "real"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "real", 1)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, out)
	require.GreaterOrEqual(t, time.Since(t0), 1500*time.Millisecond)
	require.Equal(t, 2, ftDescribe(t, c, "real").Loads)
}

// Timers are futures: a workflow can start several, and an activity, and
// take whichever is ready first. The choice is recorded, so the replay after
// each unload makes the same one.
func TestSelectTimerActivityAndSignal(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	release := make(chan struct{})
	slow := engine.NewActivity("sel.slow", func(ctx context.Context, _ struct{}) (string, error) {
		select {
		case <-release:
			return "activity", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	wf := engine.NewWorkflow("sel.wf", func(ctx engine.Context, _ struct{}) ([]string, error) {
		var got []string
		// Round 1: a short and a long timer; the short one wins.
		short, long := engine.NewTimer(ctx, time.Hour), engine.NewTimer(ctx, 48*time.Hour)
		i, err := engine.Select(ctx, long, short)
		if err != nil {
			return nil, err
		}
		got = append(got, []string{"long", "short"}[i])
		// Round 2: the long timer, a signal and an activity; the signal wins.
		sig := engine.GetSignalChannel[string](ctx, "poke")
		act := slow.Start(ctx, struct{}{})
		i, err = engine.Select(ctx, long, sig, act)
		if err != nil {
			return nil, err
		}
		switch i {
		case 1:
			v, err := sig.Receive(ctx)
			if err != nil {
				return nil, err
			}
			got = append(got, "signal:"+v)
		default:
			got = append(got, []string{"long", "", "activity"}[i])
		}
		// Round 3: the long timer against the activity; the activity wins.
		i, err = engine.Select(ctx, long, act)
		if err != nil {
			return nil, err
		}
		got = append(got, []string{"long", "activity"}[i])
		// Round 4: only the long timer is left.
		if _, err := long.Get(ctx); err != nil {
			return nil, err
		}
		got = append(got, "long")
		return got, nil
	})
	_, c := ftEnv(t, &engine.Config{Clock: clock}, slow, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "sel"})
	require.NoError(t, err)

	ftWaitUnloaded(t, c, "sel", 1) // both timers are far away: unloaded at once
	clock.Advance(time.Hour)
	// Round 2 has an activity in flight, so the run stays loaded.
	ftWaitStatus(t, c, "sel", engine.StatusRunning)
	testenv.Eventually(t, 10*time.Second, func() bool {
		h, err := c.History(ctx, "sel")
		return err == nil && len(h[0].Steps) >= 3 // two timers and the first select
	}, "round 1 recorded")
	require.NoError(t, c.Signal(ctx, "sel", "poke", "hi"))
	testenv.Eventually(t, 10*time.Second, func() bool {
		h, err := c.History(ctx, "sel")
		if err != nil {
			return false
		}
		for _, st := range h[0].Steps {
			if st.Kind == "signal" {
				return true
			}
		}
		return false
	}, "signal consumed")
	// Round 3 waits on the activity; release it.
	close(release)
	// Round 4 waits on the long timer: unloaded again.
	ftWaitUnloaded(t, c, "sel", 2)
	clock.Advance(47 * time.Hour)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"short", "signal:hi", "activity", "long"}, out)
}

// IsReady reports a timer's state without blocking, and Sleep(0) returns at
// once without unloading.
func TestTimerIsReadyAndZeroSleep(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	wf := engine.NewWorkflow("timer.ready", func(ctx engine.Context, _ struct{}) ([]bool, error) {
		if err := engine.Sleep(ctx, 0); err != nil {
			return nil, err
		}
		f := engine.NewTimer(ctx, time.Minute)
		before := f.IsReady()
		if _, err := f.Get(ctx); err != nil {
			return nil, err
		}
		return []bool{before, f.IsReady()}, nil
	})
	_, c := ftEnv(t, &engine.Config{Clock: clock}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "ready"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "ready", 1)
	clock.Advance(time.Minute)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, out)
}
