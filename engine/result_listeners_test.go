package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// signalledWorkflow returns the first "go" signal it receives.
func signalledWorkflow(name string) *engine.Workflow[struct{}, string] {
	return engine.NewWorkflow(name, func(ctx engine.Context, _ struct{}) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
}

// waitElsewhere starts Result on workflowID from waiter (in another
// process's place) and returns once it waits.
func waitElsewhere(t *testing.T, waiter *engine.Engine, workflowID string) chan error {
	t.Helper()
	ctx := testenv.Ctx(t, 60*time.Second)
	h, err := waiter.Client().Handle(ctx, workflowID)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		out, err := h.Result(ctx)
		if err == nil && string(out) != `"done"` {
			err = errUnexpected(string(out))
		}
		done <- err
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.WaiterCountForTest(waiter) == 1 }, "Result never waited")
	return done
}

// A run whose only waiter is the process that runs it closes without a
// notice to other processes: nobody elsewhere waits. Once a process waits
// on the database for a run that runs elsewhere, closes are announced.
func TestCloseAnnouncedOnlyWhileSomeoneWaitsElsewhere(t *testing.T) {
	t.Parallel()
	wf := signalledWorkflow("listen.close")
	runner, waiter := runnerAndWaiterEngines(t, wf)
	closes := make(chan bool, 10)
	engine.SetCloseNoticeHookForTest(runner, func(_ string, announced bool) { closes <- announced })
	rc := runner.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	run, err := wf.Start(ctx, rc, struct{}{}, &engine.StartOptions{ID: "local-only"})
	require.NoError(t, err)
	require.NoError(t, rc.Signal(ctx, "local-only", "go", "done"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
	require.False(t, <-closes, "a close nobody elsewhere waits for was announced")

	_, err = wf.Start(ctx, rc, struct{}{}, &engine.StartOptions{ID: "watched"})
	require.NoError(t, err)
	done := waitElsewhere(t, waiter, "watched")
	require.NoError(t, rc.Signal(ctx, "watched", "go", "done"))
	require.True(t, <-closes, "a close a process waits for elsewhere was not announced")
	require.NoError(t, <-done)
}

// A close whose commit did not see the waiter's registration (its
// statement took its snapshot before it) is not announced; the waiter,
// which read the run open meanwhile, reads it again once every such close
// has committed. The waiter's safety-net poll is an hour, so only that
// read can end its wait within the test.
func TestUnannouncedCloseIsReadAgain(t *testing.T) {
	t.Parallel()
	wf := signalledWorkflow("listen.missed")
	runner, waiter := runnerAndWaiterEngines(t, wf)
	const window = 5 * time.Second
	engine.SetMissListenersForTest(runner, waiter, window)
	closes := make(chan bool, 1)
	engine.SetCloseNoticeHookForTest(runner, func(_ string, announced bool) { closes <- announced })
	rc := runner.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	_, err := wf.Start(ctx, rc, struct{}{}, &engine.StartOptions{ID: "missed"})
	require.NoError(t, err)
	began := time.Now()
	done := waitElsewhere(t, waiter, "missed")
	require.NoError(t, rc.Signal(ctx, "missed", "go", "done"))
	require.False(t, <-closes, "the close was announced")
	if time.Since(began) >= window {
		// The staged race needs the close before the waiter's second read.
		t.Skip("the close took longer than the window to stage; nothing checked")
	}
	require.NoError(t, <-done)
}

type errUnexpected string

func (e errUnexpected) Error() string { return "unexpected result " + string(e) }
