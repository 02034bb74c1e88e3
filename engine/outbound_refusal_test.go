package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// refuseOutbound refuses every activity named "forbidden".
type refuseOutbound struct{ engine.InterceptorBase }

func (refuseOutbound) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next engine.OutboundNext) error {
	if in.Kind == engine.OutboundActivity && in.Name == "forbidden" {
		return engine.NewNonRetryableError("Refused", "forbidden by policy", nil)
	}
	return next(ctx, in)
}

func TestOutboundInterceptorErrorFailsTheCall(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{refuseOutbound{}}})
	ran := make(chan struct{}, 1)
	forbidden := engine.NewActivity("forbidden", func(ctx context.Context, _ struct{}) (struct{}, error) {
		ran <- struct{}{}
		return struct{}{}, nil
	})
	wf := engine.NewWorkflow("refusal", func(ctx engine.Context, _ struct{}) (string, error) {
		_, err := forbidden.Run(ctx, struct{}{})
		return "", err
	})
	require.NoError(t, e.Register(forbidden, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, e.Client(), struct{}{}, nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "got %v", err)
	require.Equal(t, "Refused", app.Type)
	require.Empty(t, ran, "a refused activity must not run")
}

// An activity interceptor that hands the chain an input it built itself,
// instead of the one it received or a copy, gets an error that says so.
func TestActivityInterceptorMustPassOnItsInput(t *testing.T) {
	t.Parallel()
	rebuild := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput,
		next engine.ActivityNext) (any, error) {
		return next(ctx, &engine.ActivityInput{Info: in.Info, Headers: in.Headers, Args: in.Args})
	})
	copying := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput,
		next engine.ActivityNext) (any, error) {
		cp := *in
		return next(ctx, &cp)
	})
	act := engine.NewActivity("echo", func(ctx context.Context, s string) (string, error) { return s, nil })
	wf := engine.NewWorkflow("echo.wf", func(ctx engine.Context, s string) (string, error) { return act.Run(ctx, s) })
	ctx := testenv.Ctx(t, 20*time.Second)

	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{copying}})
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	run, err := wf.Start(ctx, e.Client(), "hi", nil)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err, "a copy of the input is passed on")
	require.Equal(t, "hi", out)

	e2 := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{rebuild}})
	require.NoError(t, e2.Register(act, wf))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	run, err = wf.Start(ctx, e2.Client(), "hi", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "got %v", err)
	require.Equal(t, "BadInput", app.Type)
	require.Contains(t, app.Message, "ActivityInput it built itself")
}
