package engine_test

import (
	"fmt"
	"strings"
	"sync"
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
	waiter, rc, wc := runnerAndWaiter(t, wf)
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

// A close notice carries a small outcome, so a Result call in a process
// that does not run the workflow returns it without reading the run again:
// one read when the wait begins, none after the notice. A failure keeps its
// type across the notice; an outcome too large for a notice is read back.
func TestResultElsewhereTakesTheOutcomeFromTheNotice(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("wake.outcome", func(ctx engine.Context, in string) (string, error) {
		if _, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx); err != nil {
			return "", err
		}
		switch in {
		case "fail":
			return "", engine.NewApplicationError("Refused", "refused, with commas, and: colons", map[string]int{"code": 7})
		case "big":
			return strings.Repeat("x", 4096), nil
		}
		return "out:" + in + ",", nil
	})
	runner, waiter := runnerAndWaiterEngines(t, wf)
	rc, wc := runner.Client(), waiter.Client()
	// A Result call that begins within the quiet window after the
	// waiter's registration reads its run again at the window's end, for
	// a close that committed without seeing the registration; on a busy
	// machine the window could end before a close's notice arrived and
	// add a read. Every run here closes after its Result call waits, so
	// after the registration committed: none needs the recheck.
	engine.SetQuietWindowForTest(waiter, 0)
	var mu sync.Mutex
	var whys []string
	engine.SetResultReadHookForTest(waiter, func(runID, why string) {
		mu.Lock()
		whys = append(whys, why)
		mu.Unlock()
	})
	ctx := testenv.Ctx(t, 60*time.Second)

	// result starts id, waits until its Result call waits, lets it close
	// and returns what Result returned and why it read its run each time.
	result := func(id string) (string, []string, error) {
		run, err := wf.Start(ctx, wc, id, &engine.StartOptions{ID: id})
		require.NoError(t, err)
		mu.Lock()
		whys = nil
		mu.Unlock()
		before := engine.OutcomeReadsForTest(waiter)
		type res struct {
			out string
			err error
		}
		done := make(chan res, 1)
		go func() {
			out, err := run.Result(ctx)
			done <- res{out, err}
		}()
		testenv.Eventually(t, 20*time.Second, func() bool { return engine.WaiterCountForTest(waiter) == 1 },
			"Result never waited")
		require.NoError(t, rc.Signal(ctx, id, "go", "now"))
		r := <-done
		reads := engine.OutcomeReadsForTest(waiter) - before
		mu.Lock()
		defer mu.Unlock()
		require.EqualValues(t, len(whys), reads, "runs read other than by Result: %q", whys)
		return r.out, whys, r.err
	}

	out, reads, err := result("small")
	require.NoError(t, err)
	require.Equal(t, "out:small,", out)
	require.Equal(t, []string{"first"}, reads, "the outcome was read back instead of taken from the notice")

	_, reads, err = result("fail")
	var appErr *engine.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, "Refused", appErr.Type)
	require.Equal(t, "refused, with commas, and: colons", appErr.Message)
	require.Equal(t, []string{"first"}, reads, "the failure was read back instead of taken from the notice")

	out, reads, err = result("big")
	require.NoError(t, err)
	require.Len(t, out, 4096)
	require.Equal(t, []string{"first", "woken without the outcome"}, reads, "an outcome too large for a notice is read back once")
	require.Zero(t, engine.WaiterCountForTest(waiter))
}

// runnerAndWaiter sets up two engines on one schema: a runner with a
// worker, and a waiter without one whose Result calls, waiting on the
// runner's runs, read them again only after an hour unless woken. It
// returns the waiter and both engines' clients.
func runnerAndWaiter(t *testing.T, wf engine.Definition) (*engine.Engine, *engine.Client, *engine.Client) {
	t.Helper()
	runner, waiter := runnerAndWaiterEngines(t, wf)
	return waiter, runner.Client(), waiter.Client()
}

// runnerAndWaiterEngines is runnerAndWaiter's two engines.
func runnerAndWaiterEngines(t *testing.T, wf engine.Definition) (runner, waiter *engine.Engine) {
	t.Helper()
	runner = testenv.Engine(t, nil)
	require.NoError(t, runner.Register(wf))
	testenv.Worker(t, runner, engine.WorkerConfig{})
	waiter = testenv.Engine(t, &engine.Config{Schema: runner.Schema()})
	require.NoError(t, waiter.Register(wf))
	engine.SetResultPollForTest(waiter, time.Hour)
	return runner, waiter
}
