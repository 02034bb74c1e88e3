package cancel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// Cancel the renewal before, during and after each of its steps. Whatever
// went through is undone, latest first, exactly once; whatever did not is
// left alone; a running activity's context is cancelled before any
// compensation runs.
func TestCancelAtEachPoint(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// delay starts the run an hour from now: cancelled before it begins.
		delay bool
		// pauseAfter cancels once that step completed, before the next.
		pauseAfter string
		// hold cancels while that activity runs; honour says whether it
		// gives up (true) or completes anyway (its call went out).
		hold   string
		honour bool
		// done cancels after the run completed.
		done bool

		wantCalls            []string
		wantUndo             []string
		wantCharges, refunds int
	}{
		{name: "before charge", delay: true,
			wantCalls: []string{}, wantUndo: []string{}},
		{name: "during charge, declined", hold: "charge", honour: true,
			wantCalls: []string{"charge", "charge:ctx-cancelled"},
			wantUndo:  []string{"shop.refund:not_needed"}},
		{name: "during charge, went through", hold: "charge",
			wantCalls: []string{"charge", "charge:ctx-cancelled", "refund"},
			wantUndo:  []string{"shop.refund:compensated"}, wantCharges: 1, refunds: 1},
		{name: "after charge", pauseAfter: "charge",
			wantCalls: []string{"charge", "refund"},
			wantUndo:  []string{"shop.refund:compensated"}, wantCharges: 1, refunds: 1},
		{name: "during register", hold: "register", honour: true,
			wantCalls: []string{"charge", "register", "register:ctx-cancelled", "refund"},
			wantUndo:  []string{"shop.unregister:not_needed", "shop.refund:compensated"}, wantCharges: 1, refunds: 1},
		{name: "after register", pauseAfter: "register",
			wantCalls: []string{"charge", "register", "unregister", "refund"},
			wantUndo:  []string{"shop.unregister:compensated", "shop.refund:compensated"}, wantCharges: 1, refunds: 1},
		{name: "during notify", hold: "notify", honour: true,
			wantCalls: []string{"charge", "register", "notify", "notify:ctx-cancelled", "unregister", "refund"},
			wantUndo:  []string{"shop.unregister:compensated", "shop.refund:compensated"}, wantCharges: 1, refunds: 1},
		{name: "after notify", pauseAfter: "notify",
			wantCalls:   []string{"charge", "register", "notify", "notify_cancelled", "unregister", "refund"},
			wantUndo:    []string{"shop.notify_cancelled:compensated", "shop.unregister:compensated", "shop.refund:compensated"},
			wantCharges: 1, refunds: 1},
		{name: "after completion", done: true,
			wantCalls:   []string{"charge", "register", "notify"},
			wantUndo:    []string{"shop.notify_cancelled:recorded", "shop.unregister:recorded", "shop.refund:recorded"},
			wantCharges: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t, envOptions{})
			ctx := grafttest.Context(t, 30*time.Second)
			var h *hold
			if tc.hold != "" {
				h = v.p.hold(tc.hold, tc.honour)
			}
			o := Order{ID: "op-1", Domain: "example.com", Amount: 1200, PauseAfter: tc.pauseAfter}
			opts := &engine.StartOptions{}
			if tc.delay {
				opts.Delay = time.Hour
			}
			run := v.start(v.s.renew, o, opts)
			switch {
			case tc.pauseAfter != "":
				v.waitCompleted(o.ID, "shop."+tc.pauseAfter)
			case h != nil:
				<-h.started
			case tc.done:
				_, err := run.Result(ctx)
				require.NoError(t, err)
				require.ErrorIs(t, v.c.Cancel(ctx, o.ID, "too late"), engine.ErrNotRunning)
			}
			if !tc.done {
				require.NoError(t, v.c.Cancel(ctx, o.ID, "customer asked"))
				_, err := run.Result(ctx)
				requireCanceled(t, err, "customer asked")
			}

			require.Equal(t, tc.wantCalls, v.p.callLog())
			charges, refunds := v.ledger(o.ID)
			require.Equal(t, tc.wantCharges, charges, "charges")
			require.Equal(t, tc.refunds, refunds, "refunds")
			r := v.report(o.ID)
			require.Equal(t, tc.wantUndo, undoStatuses(r))
			status, refundRef, problem := v.legacy(o.ID)
			require.Nil(t, problem)
			if tc.done {
				require.Equal(t, cancel.OutcomeNone, r.Outcome)
				require.Equal(t, string(engine.StatusCompleted), status)
				return
			}
			require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
			require.Equal(t, cancel.TriggerCancel, r.Trigger)
			require.Equal(t, "customer asked", r.Reason)
			require.Equal(t, string(engine.StatusCancelled), status, "legacy row")
			require.Equal(t, tc.refunds == 1, refundRef != nil, "legacy row carries the refund reference")
			for _, s := range r.Steps {
				if s.Status == cancel.StepCompensated {
					require.True(t, strings.HasPrefix(s.Key, o.ID+"/cancel/"+s.Step+"/"), "key %q", s.Key)
				}
			}
		})
	}
}

// A second cancellation while compensations run changes nothing: the refund
// is not interrupted, runs once, and the first reason stands.
func TestCancelTwice(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{})
	ctx := grafttest.Context(t, 30*time.Second)
	h := v.p.hold("refund", false)
	o := Order{ID: "op-twice", Domain: "twice.com", Amount: 500, PauseAfter: "charge"}
	run := v.start(v.s.renew, o, nil)
	v.waitCompleted(o.ID, "shop.charge")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "first"))
	<-h.started
	require.NoError(t, v.c.Cancel(ctx, o.ID, "second"))
	close(h.release)
	_, err := run.Result(ctx)
	requireCanceled(t, err, "first")
	require.NoError(t, v.c.Cancel(ctx, o.ID, "third, after the end"))

	require.Equal(t, []string{"charge", "refund"}, v.p.callLog(), "the refund's context was never cancelled")
	_, refunds := v.ledger(o.ID)
	require.Equal(t, 1, refunds)
	r := v.report(o.ID)
	require.Equal(t, []string{"shop.refund:compensated"}, undoStatuses(r))
	require.Equal(t, "first", r.Reason)
	hist, err := v.c.History(ctx, o.ID)
	require.NoError(t, err)
	require.Len(t, hist, 1)
	cancels := 0
	for _, st := range hist[0].Steps {
		if st.Kind == "cancel" {
			cancels++
		}
	}
	require.Equal(t, 1, cancels)
}

// Abort: the registry rejects the renewal for good, and the workflow ends its
// own operation as cancelled, with the charge refunded.
func TestAbortSelfCancels(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{})
	ctx := grafttest.Context(t, 30*time.Second)
	v.p.rejectRegister.Store(true)
	o := Order{ID: "op-abort", Domain: "taken.com", Amount: 900}
	run := v.start(v.s.renew, o, nil)
	_, err := run.Result(ctx)
	requireCanceled(t, err, "registry rejected taken.com")

	info, err := v.c.Describe(ctx, o.ID)
	require.NoError(t, err)
	require.Equal(t, engine.StatusCancelled, info.Status)
	require.True(t, info.CancelRequested)
	require.Equal(t, []string{"charge", "register", "refund"}, v.p.callLog())
	charges, refunds := v.ledger(o.ID)
	require.Equal(t, 1, charges)
	require.Equal(t, 1, refunds)
	r := v.report(o.ID)
	require.Equal(t, cancel.TriggerCancel, r.Trigger)
	require.Equal(t, []string{"shop.unregister:not_needed", "shop.refund:compensated"}, undoStatuses(r))
	status, _, _ := v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
}

// Compensation on failure is per workflow type: the strict renewal refunds
// when it fails, the plain one does not; both keep their own error.
func TestCompensateOnFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		strict  bool
		refunds int
		outcome cancel.Outcome
	}{
		{strict: true, refunds: 1, outcome: cancel.OutcomeCompensated},
		{strict: false, refunds: 0, outcome: cancel.OutcomeNone},
	} {
		t.Run(map[bool]string{true: "strict", false: "plain"}[tc.strict], func(t *testing.T) {
			t.Parallel()
			v := newEnv(t, envOptions{})
			ctx := grafttest.Context(t, 30*time.Second)
			v.p.rejectRegister.Store(true)
			wf := v.s.renew
			if tc.strict {
				wf = v.s.renewStrict
			}
			o := Order{ID: "op-fail", Domain: "taken.com", Amount: 100, FailOnReject: true}
			run := v.start(wf, o, nil)
			_, err := run.Result(ctx)
			var app *engine.ApplicationError
			require.ErrorAs(t, err, &app)
			require.Equal(t, "RegistryRejected", app.Type)
			status, _, _ := v.legacy(o.ID)
			require.Equal(t, string(engine.StatusFailed), status)
			_, refunds := v.ledger(o.ID)
			require.Equal(t, tc.refunds, refunds)
			r := v.report(o.ID)
			require.Equal(t, tc.outcome, r.Outcome)
			if tc.strict {
				require.Equal(t, cancel.TriggerFailure, r.Trigger)
				require.Contains(t, r.Reason, "refuses taken.com")
			}
		})
	}
}

// Without the interceptor, Add and Abort refuse loudly instead of dropping
// the compensation.
func TestNotInstalled(t *testing.T) {
	t.Parallel()
	undo := engine.NewActivity("bare.undo", func(context.Context, string) (string, error) { return "", nil })
	wf := engine.NewWorkflow("bare.wf", func(ctx engine.Context, abort bool) (string, error) {
		if abort {
			return "", cancel.Abort(ctx, "no")
		}
		return "", cancel.Add(ctx, undo, "x", nil)
	})
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(undo, wf))
	grafttest.StartWorker(t, e)
	ctx := grafttest.Context(t, 30*time.Second)
	for _, abort := range []bool{false, true} {
		run, err := wf.Start(ctx, e.Client(), abort, nil)
		require.NoError(t, err)
		_, err = run.Result(ctx)
		require.ErrorContains(t, err, cancel.ErrNotInstalled.Error())
	}
}
