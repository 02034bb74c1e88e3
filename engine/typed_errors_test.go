package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type rbCodeError struct{ Code int }

func (e *rbCodeError) Error() string { return fmt.Sprintf("code %d", e.Code) }

// The error a workflow returns is persisted and comes back typed from
// Result: errors.As finds the same kind with the same fields, whichever
// process reads it.
func TestTypedErrorsSurvivePersistence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fail  func(engine.Context, *engine.Activity[struct{}, string]) error
		check func(t *testing.T, err error)
	}{
		{"application error with details and cause", func(engine.Context, *engine.Activity[struct{}, string]) error {
			e := engine.NewNonRetryableError("CardDeclined", "card declined", map[string]any{"code": 51, "bank": "x"})
			e.Cause = engine.NewApplicationError("Gateway", "issuer said no", nil)
			return fmt.Errorf("charge order 7: %w", e)
		}, func(t *testing.T, err error) {
			var app *engine.ApplicationError
			require.True(t, errors.As(err, &app))
			require.Equal(t, "CardDeclined", app.Type)
			require.Equal(t, "card declined", app.Message)
			require.True(t, app.NonRetryable)
			require.JSONEq(t, `{"code": 51, "bank": "x"}`, string(app.Details))
			var cause *engine.ApplicationError
			require.True(t, errors.As(app.Unwrap(), &cause))
			require.Equal(t, "Gateway", cause.Type)
			require.Equal(t, "issuer said no", cause.Message)
		}},
		{"plain Go error", func(engine.Context, *engine.Activity[struct{}, string]) error {
			return errors.New("boom")
		}, func(t *testing.T, err error) {
			var app *engine.ApplicationError
			require.True(t, errors.As(err, &app))
			require.Equal(t, "boom", app.Message)
			require.False(t, app.NonRetryable)
		}},
		{"custom error type keeps its name", func(engine.Context, *engine.Activity[struct{}, string]) error {
			return &rbCodeError{Code: 9}
		}, func(t *testing.T, err error) {
			var app *engine.ApplicationError
			require.True(t, errors.As(err, &app))
			require.Equal(t, "rbCodeError", app.Type)
			require.Equal(t, "code 9", app.Message)
		}},
		{"timeout from an activity", func(ctx engine.Context, hang *engine.Activity[struct{}, string]) error {
			_, err := hang.RunWith(ctx, &engine.ActivityOptions{StartToCloseTimeout: 50 * time.Millisecond,
				RetryPolicy: &engine.RetryPolicy{MaximumAttempts: 1}}, struct{}{})
			return err
		}, func(t *testing.T, err error) {
			var to *engine.TimeoutError
			require.True(t, errors.As(err, &to))
			require.Equal(t, engine.TimeoutStartToClose, to.Kind)
		}},
		{"cancellation error", func(engine.Context, *engine.Activity[struct{}, string]) error {
			return &engine.CanceledError{Reason: "operator said stop"}
		}, func(t *testing.T, err error) {
			var ca *engine.CanceledError
			require.True(t, errors.As(err, &ca))
			require.Equal(t, "operator said stop", ca.Reason)
		}},
		{"panic", func(engine.Context, *engine.Activity[struct{}, string]) error {
			panic("workflow bug")
		}, func(t *testing.T, err error) {
			var pe *engine.PanicError
			require.True(t, errors.As(err, &pe))
			require.Equal(t, "workflow bug", pe.Value)
			require.Contains(t, pe.Stack, "typed_errors_test.go", "the stack points at the panic")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hang := engine.NewActivity("typed.hang", func(ctx context.Context, _ struct{}) (string, error) {
				return "", rbHang(ctx)
			})
			wf := engine.NewWorkflow("typed.fail", func(ctx engine.Context, _ struct{}) (string, error) {
				return "", tc.fail(ctx, hang)
			})
			e, c := rbEnv(t, nil, hang, wf)
			ctx := testenv.Ctx(t, 30*time.Second)
			run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "typed"})
			require.NoError(t, err)
			_, err = run.Result(ctx)
			require.Error(t, err)
			tc.check(t, err)

			// The same from the record, read by another engine.
			other := testenv.Engine(t, &engine.Config{Schema: e.Schema()})
			h, err := other.Client().Handle(ctx, "typed")
			require.NoError(t, err)
			_, err = h.Result(ctx)
			require.Error(t, err)
			tc.check(t, err)
			info, err := other.Client().Describe(ctx, "typed")
			require.NoError(t, err)
			require.Equal(t, engine.StatusFailed, info.Status)
			tc.check(t, info.Error)
		})
	}
}

// An activity's typed error is replayed from the record after the worker
// that saw it live is stopped: the resumed workflow (in another engine)
// still matches it with errors.As, does not run the activity again, and
// the error it returns is matched by errors.As on the client.
func TestTypedErrorsAfterReplay(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	declined := engine.NewActivity("typed.charge", func(ctx context.Context, amount int) (int, error) {
		log.add("charge")
		e := engine.NewNonRetryableError("CardDeclined", fmt.Sprintf("declined %d", amount), map[string]int{"code": 51})
		e.Cause = &rbCodeError{Code: 51}
		return 0, e
	})
	wf := engine.NewWorkflow("typed.replay", func(ctx engine.Context, amount int) (string, error) {
		_, err := declined.Run(ctx, amount)
		// Wait for an operator's decision: the run is unloaded here, and
		// resumed by replay when the signal comes.
		decision, rerr := engine.GetSignalChannel[string](ctx, "decide").Receive(ctx)
		if rerr != nil {
			return "", rerr
		}
		var app *engine.ApplicationError
		if !errors.As(err, &app) {
			return "", fmt.Errorf("replayed error lost its type: %T %v", err, err)
		}
		var code map[string]int
		if jerr := json.Unmarshal(app.Details, &code); jerr != nil || code["code"] != 51 {
			return "", fmt.Errorf("replayed error lost its details: %s", app.Details)
		}
		return "", engine.NewNonRetryableError("Abandoned", decision+": "+app.Type, nil)
	})
	e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour})
	require.NoError(t, e1.Register(declined, wf))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	c1 := e1.Client()
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf.Start(ctx, c1, 100, &engine.StartOptions{ID: "replay"})
	require.NoError(t, err)
	rbWaitStep(t, c1, "replay", "activity", "typed.charge", "failed")
	rbStop(t, w1, 10*time.Second)
	info := rbWaitStatus(t, c1, "replay", engine.StatusWaiting)
	require.Equal(t, 1, info.Loads)

	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema()})
	require.NoError(t, e2.Register(declined, wf))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	c2 := e2.Client()
	require.NoError(t, c2.Signal(ctx, "replay", "decide", "refund"))
	h, err := c2.Handle(ctx, "replay")
	require.NoError(t, err)
	_, err = h.Result(ctx)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "want an ApplicationError, got %T: %v", err, err)
	require.Equal(t, "Abandoned", app.Type)
	require.Equal(t, "refund: CardDeclined", app.Message, "the replayed activity error kept its type")
	require.Equal(t, 1, log.count("charge"), "the failed activity is replayed, not run again")
	info, err = c2.Describe(ctx, "replay")
	require.NoError(t, err)
	require.Equal(t, 2, info.Loads)

	hist, err := c2.History(ctx, "replay")
	require.NoError(t, err)
	require.True(t, errors.As(hist[0].Steps[0].Error, &app))
	require.Equal(t, "CardDeclined", app.Type)
	var code *engine.ApplicationError
	require.True(t, errors.As(app.Cause, &code))
	require.Equal(t, "rbCodeError", code.Type, "the cause is persisted too")
}
