package engine_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A wait whose next timer is further than UnloadAfter unloads at once; a
// wait on signals only unloads after UnloadAfter; a wait with an activity in
// flight never unloads. The engine's blocked hook reports each decision, so
// the rules are checked on the decisions themselves, not on timings.
func TestUnloadRules(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	started, release := make(chan struct{}), make(chan struct{})
	slow := engine.NewActivity("unload.slow", func(ctx context.Context, _ struct{}) (int, error) {
		close(started)
		<-release
		return 1, nil
	})
	far := engine.NewWorkflow("unload.far", func(ctx engine.Context, _ struct{}) (int, error) {
		return 0, engine.Sleep(ctx, time.Hour)
	})
	sig := engine.NewWorkflow("unload.sig", func(ctx engine.Context, _ struct{}) (int, error) {
		return engine.GetSignalChannel[int](ctx, "x").Receive(ctx)
	})
	busy := engine.NewWorkflow("unload.busy", func(ctx engine.Context, _ struct{}) (int, error) {
		f := slow.Start(ctx, struct{}{})
		timer := engine.NewTimer(ctx, time.Hour)
		if _, err := engine.Select(ctx, f, timer); err != nil {
			return 0, err
		}
		return f.Get(ctx)
	})
	const unloadAfter = 300 * time.Millisecond
	e, c := ftEnv(t, &engine.Config{Clock: clock, UnloadAfter: unloadAfter}, slow, far, sig, busy)
	type pass struct {
		unloading bool
		at        time.Time
	}
	var mu sync.Mutex
	passes := map[string][]pass{}
	engine.SetBlockedHookForTest(e, func(runID string, unloading bool) {
		mu.Lock()
		defer mu.Unlock()
		passes[runID] = append(passes[runID], pass{unloading, time.Now()})
	})
	passesOf := func(runID string) []pass {
		mu.Lock()
		defer mu.Unlock()
		return append([]pass(nil), passes[runID]...)
	}
	ctx := testenv.Ctx(t, 30*time.Second)

	runFar, err := far.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "far"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "far", 1)
	p := passesOf(runFar.RunID)
	require.Len(t, p, 1, "a far timer unloads on the first pass")
	require.True(t, p[0].unloading)

	runSig, err := sig.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "sig"})
	require.NoError(t, err)
	ftWaitUnloaded(t, c, "sig", 1)
	p = passesOf(runSig.RunID)
	require.GreaterOrEqual(t, len(p), 2)
	require.False(t, p[0].unloading, "a signal wait keeps its goroutine at first")
	require.True(t, p[len(p)-1].unloading)
	require.GreaterOrEqual(t, p[len(p)-1].at.Sub(p[0].at), unloadAfter, "a signal wait keeps its goroutine for UnloadAfter")

	runBusy, err := busy.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "busy"})
	require.NoError(t, err)
	<-started
	testenv.Eventually(t, 20*time.Second, func() bool { return len(passesOf(runBusy.RunID)) > 0 }, "busy never blocked")
	require.False(t, passesOf(runBusy.RunID)[0].unloading, "an activity in flight keeps the run loaded")
	close(release)
	ftWaitStatus(t, c, "busy", engine.StatusCompleted)
	for _, p := range passesOf(runBusy.RunID) {
		require.False(t, p.unloading, "an activity in flight keeps the run loaded")
	}

	require.NoError(t, c.Signal(ctx, "sig", "x", 7))
	v, err := runSig.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, v)
	clock.Advance(time.Hour)
	_, err = runFar.Result(ctx)
	require.NoError(t, err)
}

// Unloaded runs hold no goroutine: many waiting workflows cost rows, not
// goroutines, and all resume when signalled. Not parallel, so the goroutine
// count is this test's own.
func TestUnloadedRunsHoldNoGoroutines(t *testing.T) {
	const n = 300
	wf := engine.NewWorkflow("unload.many", func(ctx engine.Context, i int) (int, error) {
		v, err := engine.GetSignalChannel[int](ctx, "wake").Receive(ctx)
		return v + i, err
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, wf)
	ctx := testenv.Ctx(t, 120*time.Second)
	base := runtime.NumGoroutine()
	runs := make([]*engine.Run[int], n)
	for i := range runs {
		var err error
		runs[i], err = wf.Start(ctx, c, i, &engine.StartOptions{ID: fmt.Sprintf("many-%d", i)})
		require.NoError(t, err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		l, err := c.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusWaiting}, Limit: 1000})
		return err == nil && len(l) == n
	}, "all runs unloaded")
	testenv.Eventually(t, 20*time.Second, func() bool { return runtime.NumGoroutine()-base < 50 },
		"unloaded runs hold no goroutines (%d more than before)", runtime.NumGoroutine()-base)

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Signal(ctx, fmt.Sprintf("many-%d", i), "wake", 1000); err != nil {
				errs <- err
				return
			}
			v, err := runs[i].Result(ctx)
			if err == nil && v != 1000+i {
				err = fmt.Errorf("run %d returned %d", i, v)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// Result waiters are released: a handle's in-process fast path when its run
// unloads, and a Result call once it returns (closed run, timeout, or
// cancelled context). A sleeping run started in this process costs no
// memory here.
func TestResultWaitersAreReleased(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	wf := engine.NewWorkflow("unload.waiters", func(ctx engine.Context, d time.Duration) (int, error) {
		return 1, engine.Sleep(ctx, d)
	})
	e, c := ftEnv(t, &engine.Config{Clock: clock}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	var runs []*engine.Run[int]
	for i := 0; i < 20; i++ {
		run, err := wf.Start(ctx, c, time.Hour, &engine.StartOptions{ID: fmt.Sprintf("w-%d", i)})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, err := c.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusWaiting}})
		return err == nil && len(l) == len(runs)
	}, "all asleep")
	testenv.Eventually(t, 5*time.Second, func() bool { return engine.WaiterCountForTest(e) == 0 },
		"sleeping runs hold no waiters (have %d)", engine.WaiterCountForTest(e))

	// A Result call that gives up does not leave its waiter behind.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := runs[0].Result(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 0, engine.WaiterCountForTest(e))

	clock.Advance(time.Hour)
	for _, r := range runs {
		v, err := r.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, v)
	}
	// Result on a closed run, again.
	v, err := runs[0].Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, v)
	require.Equal(t, 0, engine.WaiterCountForTest(e))
}
