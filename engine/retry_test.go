package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A failing activity is retried with exponential backoff: the policy's
// delays grow (20, 40, 80, 160ms) and each gap between attempts, measured
// by the activity itself, is at least the delay the policy computed for it.
// Only lower bounds are asserted: on a loaded machine a gap can run long by
// any amount, so comparing measured gaps with each other would be noise.
// The attempts are recorded on the step.
func TestRetryBackoffGrows(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	act := engine.NewActivity("retry.flaky", func(ctx context.Context, succeedOn int) (int, error) {
		n := log.add("flaky")
		if a := engine.ActivityInfoOf(ctx).Attempt; a != n {
			return 0, engine.NewNonRetryableError("WrongAttempt", fmt.Sprintf("execution %d reports attempt %d", n, a), nil)
		}
		if n < succeedOn {
			return 0, fmt.Errorf("transient failure %d", n)
		}
		return n, nil
	})
	policy := &engine.RetryPolicy{InitialInterval: 20 * time.Millisecond, BackoffCoefficient: 2, MaximumAttempts: 10}
	wf := engine.NewWorkflow("retry.backoff", func(ctx engine.Context, succeedOn int) (int, error) {
		return act.RunWith(ctx, &engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second, RetryPolicy: policy}, succeedOn)
	})
	_, c := rbEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, 5, &engine.StartOptions{ID: "backoff"})
	require.NoError(t, err)
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, got, "succeeded on the fifth attempt")

	at := log.times("flaky")
	require.Len(t, at, 5)
	for i := 1; i < len(at); i++ {
		gap, want := at[i].Sub(at[i-1]), policy.Delay(i)
		require.Equal(t, time.Duration(20<<(i-1))*time.Millisecond, want)
		require.GreaterOrEqual(t, gap, want, "gap before attempt %d", i+1)
	}
	h, err := c.History(ctx, "backoff")
	require.NoError(t, err)
	require.Len(t, h[0].Steps, 1)
	st := h[0].Steps[0]
	require.Equal(t, 5, st.Attempts)
	require.Equal(t, "completed", st.Status)
	require.GreaterOrEqual(t, st.Duration, (20+40+80+160)*time.Millisecond, "the step spans every attempt and wait")
}

// RetryPolicy.Delay: exponential from InitialInterval, capped by
// MaximumInterval, with documented defaults.
func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		p       engine.RetryPolicy
		attempt int
		want    time.Duration
	}{
		{"defaults first", engine.RetryPolicy{}, 1, time.Second},
		{"defaults doubling", engine.RetryPolicy{}, 3, 4 * time.Second},
		{"defaults cap at 100x", engine.RetryPolicy{}, 20, 100 * time.Second},
		{"coefficient 3", engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, BackoffCoefficient: 3}, 3, 90 * time.Millisecond},
		{"capped", engine.RetryPolicy{InitialInterval: 20 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 50 * time.Millisecond}, 3, 50 * time.Millisecond},
		{"coefficient 1 is constant", engine.RetryPolicy{InitialInterval: 20 * time.Millisecond, BackoffCoefficient: 1}, 5, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tc.p.Delay(tc.attempt))
		})
	}
}

type rbFailIn struct {
	// Err is what every attempt returns: "nonretryable", "listed" or "plain".
	Err string
}

// Retries stop early for non-retryable errors (the ApplicationError flag,
// or a type the policy lists) and after MaximumAttempts otherwise; the
// workflow sees the last attempt's typed error, and the step records the
// number of attempts.
func TestRetryStops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		err          string
		wantAttempts int
		wantType     string
		wantNonRetry bool
	}{
		{"NonRetryable flag", "nonretryable", 1, "Fatal", true},
		{"NonRetryableErrorTypes", "listed", 1, "Declined", false},
		{"MaximumAttempts", "plain", 3, "Transient", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var log rbAttempts
			act := engine.NewActivity("retry.fail", func(ctx context.Context, in rbFailIn) (string, error) {
				n := log.add(in.Err)
				switch in.Err {
				case "nonretryable":
					return "", engine.NewNonRetryableError("Fatal", fmt.Sprintf("attempt %d: account closed", n), nil)
				case "listed":
					return "", engine.NewApplicationError("Declined", fmt.Sprintf("attempt %d: card declined", n), map[string]int{"code": 51})
				}
				return "", engine.NewApplicationError("Transient", fmt.Sprintf("attempt %d: try later", n), nil)
			})
			policy := &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 3,
				NonRetryableErrorTypes: []string{"Declined"}}
			wf := engine.NewWorkflow("retry.stops", func(ctx engine.Context, in rbFailIn) (string, error) {
				return act.RunWith(ctx, &engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second, RetryPolicy: policy}, in)
			})
			_, c := rbEnv(t, nil, act, wf)
			ctx := testenv.Ctx(t, 30*time.Second)
			run, err := wf.Start(ctx, c, rbFailIn{Err: tc.err}, &engine.StartOptions{ID: "stops"})
			require.NoError(t, err)
			_, err = run.Result(ctx)
			var app *engine.ApplicationError
			require.True(t, errors.As(err, &app), "want an ApplicationError, got %T: %v", err, err)
			require.Equal(t, tc.wantType, app.Type)
			require.Equal(t, tc.wantNonRetry, app.NonRetryable)
			require.Contains(t, app.Message, fmt.Sprintf("attempt %d:", tc.wantAttempts), "the last attempt's error")
			require.Equal(t, tc.wantAttempts, log.count(tc.err))

			h, err := c.History(ctx, "stops")
			require.NoError(t, err)
			require.Equal(t, engine.StatusFailed, h[0].Run.Status)
			require.Len(t, h[0].Steps, 1)
			st := h[0].Steps[0]
			require.Equal(t, "failed", st.Status)
			require.Equal(t, tc.wantAttempts, st.Attempts)
			require.True(t, errors.As(st.Error, &app))
			require.Equal(t, tc.wantType, app.Type)
		})
	}
}

// A workflow can handle an activity's failure and carry on: the failure is
// a value, recorded once, not a crash of the run.
func TestRetryFailureHandledByWorkflow(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	charge := engine.NewActivity("retry.charge", func(ctx context.Context, amount int) (string, error) {
		log.add("charge")
		return "", engine.NewNonRetryableError("Declined", "insufficient funds", nil)
	})
	fallback := engine.NewActivity("retry.invoice", func(ctx context.Context, amount int) (string, error) {
		log.add("invoice")
		return fmt.Sprintf("invoiced %d", amount), nil
	})
	wf := engine.NewWorkflow("retry.handled", func(ctx engine.Context, amount int) (string, error) {
		if _, err := charge.Run(ctx, amount); err != nil {
			var app *engine.ApplicationError
			if !errors.As(err, &app) || app.Type != "Declined" {
				return "", fmt.Errorf("unexpected failure: %w", err)
			}
			return fallback.Run(ctx, amount)
		}
		return "charged", nil
	})
	_, c := rbEnv(t, nil, charge, fallback, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, 42, &engine.StartOptions{ID: "handled"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "invoiced 42", out)
	require.Equal(t, 1, log.count("charge"))
	require.Equal(t, 1, log.count("invoice"))
}
