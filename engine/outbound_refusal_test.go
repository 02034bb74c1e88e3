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

func (refuseOutbound) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next func(engine.Context, *engine.OutboundInput) error) error {
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
