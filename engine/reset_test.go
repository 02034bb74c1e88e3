package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// ftRenewal is a three-step workflow whose middle step fails until the test
// "fixes the cause".
type ftRenewal struct {
	calls   ftCounter
	fixed   atomic.Bool
	reserve *engine.Activity[string, string]
	charge  *engine.Activity[string, string]
	confirm *engine.Activity[string, string]
	wf      *engine.Workflow[string, string]
}

func newFTRenewal(prefix string) *ftRenewal {
	r := &ftRenewal{}
	r.reserve = engine.NewActivity(prefix+".reserve", func(ctx context.Context, d string) (string, error) {
		r.calls.inc("reserve")
		return "reserved " + d, nil
	})
	r.charge = engine.NewActivity(prefix+".charge", func(ctx context.Context, d string) (string, error) {
		r.calls.inc("charge")
		if !r.fixed.Load() {
			return "", engine.NewNonRetryableError("CardDeclined", "customer card data is wrong", nil)
		}
		return "charged " + d, nil
	})
	r.confirm = engine.NewActivity(prefix+".confirm", func(ctx context.Context, d string) (string, error) {
		r.calls.inc("confirm")
		return "confirmed " + d, nil
	})
	r.wf = engine.NewWorkflow(prefix+".renew", func(ctx engine.Context, domain string) (string, error) {
		a, err := r.reserve.Run(ctx, domain)
		if err != nil {
			return "", err
		}
		b, err := r.charge.Run(ctx, domain)
		if err != nil {
			return "", err
		}
		c, err := r.confirm.Run(ctx, domain)
		if err != nil {
			return "", err
		}
		return a + ", " + b + ", " + c, nil
	})
	return r
}

func (r *ftRenewal) defs() []engine.Definition {
	return []engine.Definition{r.reserve, r.charge, r.confirm, r.wf}
}

// Reset before the failed activity, after the cause was fixed: the new run
// replays the steps before it without running them again, executes from the
// failed step on, and completes; the history shows both runs.
func TestResetBeforeLastFailedActivity(t *testing.T) {
	t.Parallel()
	r := newFTRenewal("reset1")
	_, c := ftEnv(t, nil, r.defs()...)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := r.wf.Start(ctx, c, "example.com", &engine.StartOptions{ID: "renew-1"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.Equal(t, "CardDeclined", ftAppErr(t, err).Type)
	require.Equal(t, engine.StatusFailed, ftDescribe(t, c, "renew-1").Status)

	r.fixed.Store(true) // an operator corrected the card data
	h, err := c.Reset(ctx, "renew-1", engine.ResetOptions{BeforeLastFailedActivity: true, Reason: "card fixed"})
	require.NoError(t, err)
	require.NotEqual(t, run.RunID, h.RunID)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"reserved example.com, charged example.com, confirmed example.com"`, string(out))
	require.Equal(t, 1, r.calls.get("reserve"), "steps before the reset point are not re-run")
	require.Equal(t, 2, r.calls.get("charge"))
	require.Equal(t, 1, r.calls.get("confirm"))

	hist, err := c.History(ctx, "renew-1")
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, engine.StatusFailed, hist[0].Run.Status)
	require.Equal(t, engine.StatusCompleted, hist[1].Run.Status)
	require.Equal(t, "reset", hist[1].Run.StartReason)
	require.Equal(t, run.RunID, hist[1].Run.PreviousRunID)
	require.Len(t, hist[0].Steps, 2)
	require.Equal(t, "failed", hist[0].Steps[1].Status)
	require.Len(t, hist[1].Steps, 3)
	for i, name := range []string{"reset1.reserve", "reset1.charge", "reset1.confirm"} {
		require.Equal(t, name, hist[1].Steps[i].Name)
		require.Equal(t, "completed", hist[1].Steps[i].Status)
	}
	// The reserve step in the new run is the reused record.
	require.Equal(t, hist[0].Steps[0].CompletedAt, hist[1].Steps[0].CompletedAt)
	info := ftDescribe(t, c, "renew-1")
	require.Equal(t, h.RunID, info.RunID)
	require.Equal(t, engine.StatusCompleted, info.Status)
	require.Equal(t, "card fixed", info.ResetReason, "the reset's reason is recorded on the new run")
	require.Equal(t, "card fixed", hist[1].Run.ResetReason)
	require.Empty(t, hist[0].Run.ResetReason)
	// The failed run's handle follows the reset to the run that finally
	// closed, as Result's doc promises.
	out2, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "reserved example.com, charged example.com, confirmed example.com", out2)
}

// Reset by step name and by sequence number, on a completed workflow: the
// chosen step and those after it run again.
func TestResetBeforeStepAndSeq(t *testing.T) {
	t.Parallel()
	r := newFTRenewal("reset2")
	r.fixed.Store(true)
	_, c := ftEnv(t, nil, r.defs()...)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := r.wf.Start(ctx, c, "a.org", &engine.StartOptions{ID: "renew-2"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)

	h, err := c.Reset(ctx, "renew-2", engine.ResetOptions{BeforeStep: "reset2.confirm"})
	require.NoError(t, err)
	_, err = h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, r.calls.get("reserve"))
	require.Equal(t, 1, r.calls.get("charge"))
	require.Equal(t, 2, r.calls.get("confirm"))

	h, err = c.Reset(ctx, "renew-2", engine.ResetOptions{BeforeSeq: 2})
	require.NoError(t, err)
	_, err = h.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, r.calls.get("reserve"))
	require.Equal(t, 2, r.calls.get("charge"))
	require.Equal(t, 3, r.calls.get("confirm"))

	hist, err := c.History(ctx, "renew-2")
	require.NoError(t, err)
	require.Len(t, hist, 3)
	require.Equal(t, hist[0].Run.RunID, hist[1].Run.PreviousRunID)
	require.Equal(t, hist[1].Run.RunID, hist[2].Run.PreviousRunID)

	// Bad options are refused and change nothing.
	_, err = c.Reset(ctx, "renew-2", engine.ResetOptions{})
	require.Error(t, err)
	_, err = c.Reset(ctx, "renew-2", engine.ResetOptions{BeforeSeq: 1, BeforeStep: "x"})
	require.Error(t, err)
	_, err = c.Reset(ctx, "renew-2", engine.ResetOptions{BeforeStep: "no.such.step"})
	require.ErrorIs(t, err, engine.ErrNotFound)
	_, err = c.Reset(ctx, "renew-2", engine.ResetOptions{BeforeLastFailedActivity: true})
	require.ErrorIs(t, err, engine.ErrNotFound)
	_, err = c.Reset(ctx, "ghost", engine.ResetOptions{BeforeSeq: 1})
	require.ErrorIs(t, err, engine.ErrNotFound)
	hist2, err := c.History(ctx, "renew-2")
	require.NoError(t, err)
	require.Len(t, hist2, 3)
}

// Resetting an open run (here waiting for a signal that will not come)
// closes it as "reset"; buffered signals move to the new run.
func TestResetOpenRunMovesSignals(t *testing.T) {
	t.Parallel()
	var calls ftCounter
	prep := engine.NewActivity("reset3.prep", func(ctx context.Context, _ struct{}) (int, error) {
		return calls.inc("prep"), nil
	})
	wf := engine.NewWorkflow("reset3.wf", func(ctx engine.Context, _ struct{}) ([]string, error) {
		if _, err := prep.Run(ctx, struct{}{}); err != nil {
			return nil, err
		}
		ch := engine.GetSignalChannel[string](ctx, "data")
		var got []string
		for len(got) < 2 {
			v, err := ch.Receive(ctx)
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, prep, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "open"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "open", "data", "first"))
	ftWaitUnloaded(t, c, "open", 1)
	testenv.Eventually(t, 10*time.Second, func() bool {
		h, err := c.History(ctx, "open")
		return err == nil && len(h[0].Steps) == 2 // prep, first signal
	}, "first signal consumed")

	// Reset to just after prep: the consumed signal is delivered again.
	h, err := c.Reset(ctx, "open", engine.ResetOptions{BeforeSeq: 2})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "open", "data", "second"))
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `["first","second"]`, string(out))
	require.Equal(t, 1, calls.get("prep"))
	hist, err := c.History(ctx, "open")
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, engine.StatusReset, hist[0].Run.Status)
	// The old handle follows the reset to the run that closed.
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"first", "second"}, got)
	var app *engine.ApplicationError
	require.False(t, errors.As(err, &app))
}

// Reset of a closed run to before its only signal step: the signal the
// old run read is unread again in the new run, which nothing else signals
// (a reset moves the old run's signals to the new run without a delivery;
// the claim must still read them, see store.claimSQL).
func TestResetClosedRunRedeliversItsSignal(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("reset4.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		return engine.GetSignalChannel[string](ctx, "data").Receive(ctx)
	})
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "closed"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "closed", "data", "only"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "only", out)

	h, err := c.Reset(ctx, "closed", engine.ResetOptions{BeforeSeq: 1})
	require.NoError(t, err)
	got, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"only"`, string(got))
}

// Reset to before a child's start while the child still runs: the new run
// starts the same child again (same ID, same step) and takes the running
// child on instead of failing with ChildAlreadyStarted; there is one child
// run and its result reaches the new run.
func TestResetBeforeOpenChildAdoptsIt(t *testing.T) {
	t.Parallel()
	var calls ftCounter
	child := engine.NewWorkflow("reset4.child", func(ctx engine.Context, n int) (int, error) {
		v, err := engine.GetSignalChannel[int](ctx, "go").Receive(ctx)
		return n + v, err
	})
	prep := engine.NewActivity("reset4.prep", func(ctx context.Context, _ struct{}) (int, error) {
		return calls.inc("prep"), nil
	})
	parent := engine.NewWorkflow("reset4.parent", func(ctx engine.Context, _ struct{}) (int, error) {
		if _, err := prep.Run(ctx, struct{}{}); err != nil {
			return 0, err
		}
		return child.RunChild(ctx, 40, &engine.ChildOptions{ID: "reset4-kid"})
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, child, prep, parent)
	ctx := testenv.Ctx(t, 20*time.Second)
	_, err := parent.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "reset4"})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool {
		info, err := c.Describe(ctx, "reset4-kid")
		return err == nil && info.Status == engine.StatusWaiting
	}, "the child waits for its signal")

	// Reset to just after prep: the child's start step is cut.
	h, err := c.Reset(ctx, "reset4", engine.ResetOptions{BeforeSeq: 2})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool {
		hist, err := c.History(ctx, "reset4")
		return err == nil && len(hist) == 2 && len(hist[1].Steps) == 2
	}, "the new run reached the child start again")
	require.NoError(t, c.Signal(ctx, "reset4-kid", "go", 2))
	out, err := h.Result(ctx)
	require.NoError(t, err, "the running child was taken on, not refused")
	require.JSONEq(t, "42", string(out))
	require.Equal(t, 1, calls.get("prep"))
	kids, err := c.History(ctx, "reset4-kid")
	require.NoError(t, err)
	require.Len(t, kids, 1, "one child run")
}
