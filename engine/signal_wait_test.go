package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

type swResult struct {
	Got      string
	Received bool
}

// ReceiveWithTimeout returns the signal when it comes first and ok=false
// when the time runs out first; in both cases a replay takes the same
// branch. The timer that did not fire is recorded as cancelled when the run
// closes, not left "started".
func TestReceiveWithTimeout(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sigwait.approve", func(ctx engine.Context, wait time.Duration) (swResult, error) {
		v, ok, err := engine.GetSignalChannel[string](ctx, "approve").ReceiveWithTimeout(ctx, wait)
		return swResult{Got: v, Received: ok}, err
	})
	e := grafttest.NewEngine(t, engine.Config{UnloadAfter: 10 * time.Millisecond})
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)

	// The signal first: the hour-long timer never fires.
	signalled, err := wf.Start(ctx, c, time.Hour, &engine.StartOptions{ID: "signalled"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "signalled", "approve", "yes"))
	got, err := signalled.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, swResult{Got: "yes", Received: true}, got)

	// The time first.
	timedOut, err := wf.Start(ctx, c, 50*time.Millisecond, &engine.StartOptions{ID: "timed-out"})
	require.NoError(t, err)
	got, err = timedOut.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, swResult{}, got)

	timerStatus := func(id string) string {
		hist, err := c.History(ctx, id)
		require.NoError(t, err)
		for _, st := range hist[0].Steps {
			if st.Kind == "timer" {
				return st.Status
			}
		}
		t.Fatalf("run %s has no timer step", id)
		return ""
	}
	require.Equal(t, "cancelled", timerStatus("signalled"))
	require.Equal(t, "completed", timerStatus("timed-out"))

	// Both runs replay with the same code.
	grafttest.ReplayDatabase(t, c, engine.ListFilter{}, wf)
}

// A timer the workflow set and never waited for is cancelled at the close
// of its run, also when it is written in the same commit as the close.
func TestUnfiredTimerCancelledAtClose(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sigwait.forget", func(ctx engine.Context, _ struct{}) (string, error) {
		engine.NewTimer(ctx, time.Hour)
		return "done", nil
	})
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "forget"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	hist, err := c.History(ctx, "forget")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 1)
	require.Equal(t, "cancelled", hist[0].Steps[0].Status)
	require.False(t, hist[0].Steps[0].CompletedAt.IsZero())
}

// A timer recorded before the run unloaded, and never waited for, is
// cancelled when the run closes after a reload: the close reads the
// reloaded record to know the run has timers to look at.
func TestUnfiredTimerCancelledAtCloseAfterReload(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sigwait.forget-reload", func(ctx engine.Context, _ struct{}) (string, error) {
		engine.NewTimer(ctx, time.Hour)
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	e := grafttest.NewEngine(t, engine.Config{UnloadAfter: 10 * time.Millisecond})
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "forget-reload"})
	require.NoError(t, err)
	rbWaitStatus(t, c, "forget-reload", engine.StatusWaiting) // unloaded: the timer is in the record
	require.NoError(t, c.Signal(ctx, "forget-reload", "go", "now"))
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "now", got)
	hist, err := c.History(ctx, "forget-reload")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 2)
	require.Equal(t, "timer", hist[0].Steps[0].Kind)
	require.Equal(t, "cancelled", hist[0].Steps[0].Status)
}
