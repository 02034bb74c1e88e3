package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Worker.Stop drains a workflow blocked in a sleep: the run is recorded as
// waiting with its timer's fire time, not lost, and a worker of another
// engine resumes it when the timer is due. Work done before the sleep is
// not redone, and the sleep is not restarted. The clock is fake, so the
// sleep ends only when the test says: Stop returning at all shows it did
// not wait for the sleep, and a resumed run that restarted its sleep would
// never finish.
func TestShutdownDrainsSleepingWorkflow(t *testing.T) {
	t.Parallel()
	const nap = 2 * time.Second
	clock := engine.NewFakeClock(ftT0)
	var log rbAttempts
	mk := func() (*engine.Activity[string, string], *engine.Workflow[string, string]) {
		prepare := engine.NewActivity("sd.prepare", func(ctx context.Context, in string) (string, error) {
			log.add("prepare")
			return "prepared " + in, nil
		})
		return prepare, engine.NewWorkflow("sd.nap", func(ctx engine.Context, in string) (string, error) {
			p, err := prepare.Run(ctx, in)
			if err != nil {
				return "", err
			}
			if err := engine.Sleep(ctx, nap); err != nil {
				return "", err
			}
			return p + ", rested", nil
		})
	}
	// UnloadAfter well above the sleep: only the drain unloads the run.
	act1, wf1 := mk()
	e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour, Clock: clock})
	require.NoError(t, e1.Register(act1, wf1))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	c1 := e1.Client()
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf1.Start(ctx, c1, "bed", &engine.StartOptions{ID: "nap"})
	require.NoError(t, err)
	timer := rbWaitStep(t, c1, "nap", "timer", "timer", "started")
	info, err := c1.Describe(ctx, "nap")
	require.NoError(t, err)
	require.Equal(t, engine.StatusRunning, info.Status, "still loaded in its sleep")

	rbStop(t, w1, 10*time.Second)
	info, err = c1.Describe(ctx, "nap")
	require.NoError(t, err)
	require.Equal(t, engine.StatusWaiting, info.Status, "recorded as waiting, not lost")
	require.True(t, timer.StartedAt.Add(nap).Equal(info.WakeAt), "wakes when the timer fires: %v, want %v", info.WakeAt, timer.StartedAt.Add(nap))

	act2, wf2 := mk()
	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema(), Clock: clock})
	require.NoError(t, e2.Register(act2, wf2))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	clock.Advance(nap)
	h, err := e2.Client().Handle(ctx, "nap")
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"prepared bed, rested"`, string(out))
	require.Equal(t, 1, log.count("prepare"))
	info, err = e2.Client().Describe(ctx, "nap")
	require.NoError(t, err)
	require.Equal(t, 2, info.Loads)
}

// Stop lets a running activity finish and records its result before the
// run is handed back; the next worker does not run it again.
func TestShutdownWaitsForRunningActivity(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := engine.NewActivity("sd.slow", func(ctx context.Context, in string) (string, error) {
		log.add("slow")
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return "", errors.New("the drain cancelled a running activity")
		}
		return "slow " + in, nil
	})
	wf := engine.NewWorkflow("sd.act", func(ctx engine.Context, in string) (string, error) {
		v, err := slow.Run(ctx, in)
		if err != nil {
			return "", err
		}
		w, err := engine.GetSignalChannel[string](ctx, "then").Receive(ctx)
		if err != nil {
			return "", err
		}
		return v + " then " + w, nil
	})
	e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour})
	require.NoError(t, e1.Register(slow, wf))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf.Start(ctx, e1.Client(), "job", &engine.StartOptions{ID: "act"})
	require.NoError(t, err)
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("activity never started")
	}

	stopped := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- w1.Stop(sctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while an activity was running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Stop did not return after the activity finished")
	}
	info, err := e1.Client().Describe(ctx, "act")
	require.NoError(t, err)
	require.Equal(t, engine.StatusWaiting, info.Status)
	h, err := e1.Client().History(ctx, "act")
	require.NoError(t, err)
	require.Len(t, h[0].Steps, 1)
	require.Equal(t, "completed", h[0].Steps[0].Status, "the activity's result was recorded before the hand-back")

	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema()})
	require.NoError(t, e2.Register(slow, wf))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	require.NoError(t, e2.Client().Signal(ctx, "act", "then", "done"))
	hd, err := e2.Client().Handle(ctx, "act")
	require.NoError(t, err)
	out, err := hd.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"slow job then done"`, string(out))
	require.Equal(t, 1, log.count("slow"))
}

// When Stop's context ends before an activity does, the worker abandons the
// run and releases its lease: another worker, already running, resumes it at
// once (it is told; it does not wait for its next look for expired leases,
// 15 s away with a 60 s lease) and runs the abandoned activity again. The
// abandoned attempt's cancellation is not recorded as the step's outcome.
func TestShutdownDeadlineReleasesLease(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	stuck := engine.NewActivity("sd.stuck", func(ctx context.Context, in string) (string, error) {
		if log.add("stuck") == 1 {
			<-ctx.Done() // hangs until the worker gives up on it
			return "", ctx.Err()
		}
		return "unstuck " + in, nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: time.Minute,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}})
	wf := engine.NewWorkflow("sd.stuckwf", func(ctx engine.Context, in string) (string, error) {
		return stuck.Run(ctx, in)
	})
	e1 := testenv.Engine(t, &engine.Config{LeaseTTL: time.Minute})
	require.NoError(t, e1.Register(stuck, wf))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf.Start(ctx, e1.Client(), "job", &engine.StartOptions{ID: "stuck"})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool { return log.count("stuck") == 1 }, "activity never started")
	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema(), LeaseTTL: time.Minute})
	require.NoError(t, e2.Register(stuck, wf))
	testenv.Worker(t, e2, engine.WorkerConfig{})

	sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// ctx ends (30 s) well before the lease would expire (a minute): a
	// result at all means the run was resumed without waiting for it.
	require.ErrorIs(t, w1.Stop(sctx), context.DeadlineExceeded)
	h, err := e2.Client().Handle(ctx, "stuck")
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err, "the abandoned attempt's cancellation must not become the step's result")
	require.JSONEq(t, `"unstuck job"`, string(out))
	require.Equal(t, 2, log.count("stuck"))
	hist, err := e2.Client().History(ctx, "stuck")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 1)
	require.Equal(t, "completed", hist[0].Steps[0].Status)
}

// Starts racing with Stop: a run this process starts while its worker
// stops is either handed to the worker before Stop drains it or left for
// other workers, never left running on the stopped worker. Once Stop and
// the starts have returned, no run is running (Stop used to wait for ever on
// runs launched behind its back), and another worker completes them all.
func TestShutdownRacingStarts(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	step := engine.NewActivity("sd.step", func(ctx context.Context, id string) (string, error) {
		log.add(id)
		return id, nil
	})
	wf := engine.NewWorkflow("sd.race", func(ctx engine.Context, id string) (string, error) {
		if _, err := engine.GetSignalChannel[struct{}](ctx, "go").Receive(ctx); err != nil {
			return "", err
		}
		return step.Run(ctx, id)
	})
	e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour, LeaseTTL: 30 * time.Second})
	require.NoError(t, e1.Register(step, wf))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	c1 := e1.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	const n = 100
	ids := rbIDs("race", n)
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 10 {
				_, err := wf.Start(ctx, c1, ids[i], &engine.StartOptions{ID: ids[i]})
				if err != nil {
					t.Errorf("start %s: %v", ids[i], err)
				}
			}
		}()
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, err := c1.List(ctx, engine.ListFilter{Limit: n})
		return err == nil && len(l) >= n/4
	}, "starts under way")
	rbStop(t, w1, 20*time.Second)
	// Starts still committing when Stop returned give their runs back once
	// they return.
	wg.Wait()
	running, err := c1.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusRunning}, Limit: n})
	require.NoError(t, err)
	for _, r := range running {
		t.Errorf("run %s is still running on the stopped worker (loads %d)", r.WorkflowID, r.Loads)
	}

	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema()})
	require.NoError(t, e2.Register(step, wf))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	c2 := e2.Client()
	for _, id := range ids {
		require.NoError(t, c2.Signal(ctx, id, "go", struct{}{}))
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		l, err := c2.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusCompleted}, Limit: n})
		return err == nil && len(l) == n
	}, "not every run completed")
	for _, id := range ids {
		require.Equal(t, 1, log.count(id), "workflow %s", id)
	}
}
