package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A Result call in a process that does not run the workflow is woken by the
// notification sent when the run closes, whether it completes where it
// runs or is reset there and the new run completes. The waiter's safety-net
// poll is an hour, so only the notification can wake it within the test.
func TestResultElsewhereWokenByCloseNotification(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("wake.result", func(ctx engine.Context, _ struct{}) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	runner := testenv.Engine(t, nil)
	require.NoError(t, runner.Register(wf))
	testenv.Worker(t, runner, engine.WorkerConfig{})
	waiter := testenv.Engine(t, &engine.Config{Schema: runner.Schema()})
	require.NoError(t, waiter.Register(wf))
	engine.SetResultPollForTest(waiter, time.Hour)
	rc, wc := runner.Client(), waiter.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	// wait calls Result in the background and returns once it is waiting.
	wait := func(run *engine.Run[string]) chan error {
		done := make(chan error, 1)
		go func() {
			out, err := run.Result(ctx)
			if err == nil && out != "done" {
				err = fmt.Errorf("result %q, want done", out)
			}
			done <- err
		}()
		testenv.Eventually(t, 20*time.Second, func() bool { return engine.WaiterCountForTest(waiter) == 1 },
			"Result never waited")
		return done
	}

	run, err := wf.Start(ctx, wc, struct{}{}, &engine.StartOptions{ID: "closes-there"})
	require.NoError(t, err)
	done := wait(run)
	require.NoError(t, rc.Signal(ctx, "closes-there", "go", "done"))
	require.NoError(t, <-done)

	run, err = wf.Start(ctx, wc, struct{}{}, &engine.StartOptions{ID: "reset-there"})
	require.NoError(t, err)
	done = wait(run)
	_, err = rc.Reset(ctx, "reset-there", engine.ResetOptions{BeforeSeq: 1})
	require.NoError(t, err)
	// The waiter follows the reset to the new run and waits on it.
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := wc.Describe(ctx, "reset-there")
		return err == nil && info.RunID != run.RunID && engine.WaiterCountForTest(waiter) == 1
	}, "Result did not move to the run the reset started")
	require.NoError(t, rc.Signal(ctx, "reset-there", "go", "done"))
	require.NoError(t, <-done)
	require.Zero(t, engine.WaiterCountForTest(waiter))
}

// Runs started by a process without a worker reach the worker, and the
// Result calls waiting on them in that process learn of their ends, through
// the notices the committers send after their commits (many runs to a
// notification, many runs to an outcome read). The worker's poll for due
// work and the waiter's safety-net poll are an hour, so only the notices
// can move the runs along within the test.
func TestManyResultsElsewhereWokenByNotices(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("wake.many", func(ctx engine.Context, n int) (int, error) { return n + 1, nil })
	runner := testenv.Engine(t, &engine.Config{PollInterval: time.Hour})
	require.NoError(t, runner.Register(wf))
	waiter := testenv.Engine(t, &engine.Config{Schema: runner.Schema(), PollInterval: time.Hour})
	require.NoError(t, waiter.Register(wf))
	engine.SetResultPollForTest(waiter, time.Hour)
	// The worker starts first and waits on its first (empty) claim.
	testenv.Worker(t, runner, engine.WorkerConfig{})
	wc := waiter.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	const n = 200
	errs := make(chan error, n)
	for i := range n {
		go func() {
			run, err := wf.Start(ctx, wc, i, &engine.StartOptions{ID: fmt.Sprintf("many-%d", i)})
			if err != nil {
				errs <- err
				return
			}
			out, err := run.Result(ctx)
			if err == nil && out != i+1 {
				err = fmt.Errorf("run %d returned %d", i, out)
			}
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	require.Zero(t, engine.WaiterCountForTest(waiter))
}
