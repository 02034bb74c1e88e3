package interceptors_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

var errBlocked = errors.New("blocked by policy")

// refuser fails the calls whose name starts with "refuse": an interceptor
// error must reach the caller as the engine's typed error, the same after
// it went through the database.
type refuser struct{ engine.InterceptorBase }

func (refuser) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	if in.Info.WorkflowType == "refuse.wf" {
		return nil, engine.NewNonRetryableError("WorkflowRefused", "not today", map[string]string{"why": "policy"})
	}
	return next(ctx, in)
}

func (refuser) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) error {
	if in.Name == "refuse" {
		return engine.NewApplicationError("SignalRefused", "bad signal", nil)
	}
	return next(ctx, in)
}

func (refuser) HandleQuery(ctx context.Context, in *engine.HandleQueryInput,
	next engine.QueryNext) (any, error) {
	if in.Name == "refuse" {
		return nil, fmt.Errorf("query %q: %w", in.Name, engine.ErrUnknownQuery)
	}
	return next(ctx, in)
}

func (refuser) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	if in.Info.ActivityName == "refuse.act" {
		return nil, engine.NewNonRetryableError("ActivityRefused", "provider key missing", nil)
	}
	return next(ctx, in)
}

func (refuser) ClientCall(ctx context.Context, in *engine.ClientCallInput,
	next engine.ClientNext) (any, error) {
	if in.Kind == engine.ClientStart && in.WorkflowID == "refuse-start" {
		return nil, fmt.Errorf("start %s: %w", in.WorkflowID, errBlocked)
	}
	return next(ctx, in)
}

func TestInterceptorErrorsAreTyped(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	var actCalls atomic.Int32
	act := engine.NewActivity("refuse.act", func(ctx context.Context, in string) (string, error) {
		actCalls.Add(1)
		return in, nil
	})
	viaActivity := engine.NewWorkflow("refuse.viaact", func(ctx engine.Context, in string) (string, error) {
		v, err := act.Run(ctx, in)
		if err != nil {
			return "", fmt.Errorf("step: %w", err)
		}
		return v, nil
	})
	refused := engine.NewWorkflow("refuse.wf", func(ctx engine.Context, in string) (string, error) { return in, nil })
	viaSignal := engine.NewWorkflow("refuse.viasignal", func(ctx engine.Context, in string) (string, error) {
		engine.SetQueryHandler(ctx, "refuse", func(struct{}) (string, error) { return "unreachable", nil })
		return engine.GetSignalChannel[string](ctx, "refuse").Receive(ctx)
	})
	e := newEngine(t, []engine.Interceptor{refuser{}}, act, viaActivity, refused, viaSignal)
	c := e.Client()

	requireApp := func(t *testing.T, err error, typ string, nonRetryable bool) *engine.ApplicationError {
		t.Helper()
		var app *engine.ApplicationError
		require.True(t, errors.As(err, &app), "want an ApplicationError, got %T: %v", err, err)
		require.Equal(t, typ, app.Type)
		require.Equal(t, nonRetryable, app.NonRetryable)
		return app
	}

	t.Run("activity", func(t *testing.T) {
		run, err := viaActivity.Start(ctx, c, "x", nil)
		require.NoError(t, err)
		_, err = run.Result(ctx)
		requireApp(t, err, "ActivityRefused", true)
		require.Zero(t, actCalls.Load(), "the interceptor refused before the activity ran")
		hist, err := c.History(ctx, run.WorkflowID)
		require.NoError(t, err)
		steps := hist[len(hist)-1].Steps
		require.Len(t, steps, 1)
		require.Equal(t, 1, steps[0].Attempts, "a non-retryable refusal is not retried")
		requireApp(t, steps[0].Error, "ActivityRefused", true)
	})
	t.Run("workflow", func(t *testing.T) {
		run, err := refused.Start(ctx, c, "x", nil)
		require.NoError(t, err)
		_, err = run.Result(ctx)
		app := requireApp(t, err, "WorkflowRefused", true)
		require.JSONEq(t, `{"why":"policy"}`, string(app.Details))
		info, err := c.Describe(ctx, run.WorkflowID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusFailed, info.Status)
		requireApp(t, info.Error, "WorkflowRefused", true)
	})
	t.Run("signal and query", func(t *testing.T) {
		run, err := viaSignal.Start(ctx, c, "x", &engine.StartOptions{ID: "refuse-signal"})
		require.NoError(t, err)
		_, err = c.Query(ctx, "refuse-signal", "refuse", nil)
		require.ErrorIs(t, err, engine.ErrUnknownQuery)
		require.NoError(t, c.Signal(ctx, "refuse-signal", "refuse", "payload"))
		_, err = run.Result(ctx)
		requireApp(t, err, "SignalRefused", false)
	})
	t.Run("client", func(t *testing.T) {
		_, err := refused.Start(ctx, c, "x", &engine.StartOptions{ID: "refuse-start"})
		require.ErrorIs(t, err, errBlocked)
		_, err = c.Describe(ctx, "refuse-start")
		require.ErrorIs(t, err, engine.ErrNotFound, "a refused start writes nothing")
	})
}
