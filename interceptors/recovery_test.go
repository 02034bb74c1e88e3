package interceptors_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

// errorLog is an outer interceptor that keeps the errors workflow and
// activity calls returned to it: with Recovery inside, a panic arrives as
// an error, not as a panic unwinding through it.
type errorLog struct {
	engine.InterceptorBase
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) keep(err error) {
	if err != nil {
		l.mu.Lock()
		l.errs = append(l.errs, err)
		l.mu.Unlock()
	}
}

func (l *errorLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

func (l *errorLog) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	out, err := next(ctx, in)
	l.keep(err)
	return out, err
}

func (l *errorLog) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	out, err := next(ctx, in)
	l.keep(err)
	return out, err
}

func requirePanicError(t *testing.T, err error, value, frame string) {
	t.Helper()
	var pe *engine.PanicError
	require.True(t, errors.As(err, &pe), "want a PanicError, got %T: %v", err, err)
	require.Equal(t, value, pe.Value)
	require.Contains(t, pe.Stack, frame, "the stack shows where the panic happened")
}

func TestRecoveryActivityPanicIsRetried(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	var calls atomic.Int32
	act := engine.NewActivity("rec.act", func(ctx context.Context, in string) (string, error) {
		if calls.Add(1) == 1 {
			panic("activity exploded")
		}
		return in + "!", nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}})
	wf := engine.NewWorkflow("rec.wf", func(ctx engine.Context, in string) (string, error) { return act.Run(ctx, in) })
	outer := &errorLog{}
	e := newEngine(t, []engine.Interceptor{outer, interceptors.NewRecovery()}, act, wf)
	run, err := wf.Start(ctx, e.Client(), "x", nil)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err, "the panic was a retryable failure of the first attempt")
	require.Equal(t, "x!", out)
	require.EqualValues(t, 2, calls.Load())
	errs := outer.all()
	require.Len(t, errs, 1)
	requirePanicError(t, errs[0], "activity exploded", "TestRecoveryActivityPanicIsRetried")
}

func TestRecoveryWorkflowPanicFailsTheRun(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	act := engine.NewActivity("recw.act", func(ctx context.Context, in string) (string, error) { return in, nil })
	wf := engine.NewWorkflow("recw.wf", func(ctx engine.Context, in string) (string, error) {
		if _, err := act.Run(ctx, in); err != nil {
			return "", err
		}
		if in == "panic" {
			var m map[string]int
			m["boom"]++ //nolint:staticcheck // SA5000 is the point: a real runtime panic, assignment to entry in nil map
		}
		return in, nil
	})
	queried := engine.NewWorkflow("recw.query", func(ctx engine.Context, in string) (string, error) {
		engine.SetQueryHandler(ctx, "explode", func(struct{}) (string, error) { panic("query exploded") })
		return in, nil
	})
	outer := &errorLog{}
	e := newEngine(t, []engine.Interceptor{outer, interceptors.NewRecovery()}, act, wf, queried)
	run, err := wf.Start(ctx, e.Client(), "panic", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	requirePanicError(t, err, "assignment to entry in nil map", "TestRecoveryWorkflowPanicFailsTheRun")
	info, err := e.Client().Describe(ctx, run.WorkflowID)
	require.NoError(t, err)
	require.Equal(t, engine.StatusFailed, info.Status)
	errs := outer.all()
	require.Len(t, errs, 1, "the outer interceptor saw the panic as an error")
	requirePanicError(t, errs[0], "assignment to entry in nil map", "TestRecoveryWorkflowPanicFailsTheRun")

	// The worker lives on.
	run, err = wf.Start(ctx, e.Client(), "fine", nil)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "fine", out)

	// A panicking query handler fails the query, not the caller's process.
	qrun, err := queried.Start(ctx, e.Client(), "q", nil)
	require.NoError(t, err)
	_, err = qrun.Result(ctx)
	require.NoError(t, err)
	_, err = e.Client().Query(ctx, qrun.WorkflowID, "explode", nil)
	requirePanicError(t, err, "query exploded", "TestRecoveryWorkflowPanicFailsTheRun")
}

func TestRecoveryKeepsNonDeterminismErrors(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	var changed atomic.Bool // the workflow's "code" changes while the run is unloaded
	a := engine.NewActivity("nd.a", func(ctx context.Context, in string) (string, error) { return in, nil })
	b := engine.NewActivity("nd.b", func(ctx context.Context, in string) (string, error) { return in, nil })
	wf := engine.NewWorkflow("nd.wf", func(ctx engine.Context, in string) (string, error) {
		step := a
		if changed.Load() {
			step = b
		}
		if _, err := step.Run(ctx, in); err != nil {
			return "", err
		}
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	e := newEngine(t, []engine.Interceptor{interceptors.NewRecovery()}, a, b, wf)
	run, err := wf.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: "nd-1"})
	require.NoError(t, err)
	waitUnloaded(t, e, "nd-1")
	changed.Store(true)
	require.NoError(t, e.Client().Signal(ctx, "nd-1", "go", "y"))
	_, err = run.Result(ctx)
	var nd *engine.NonDeterminismError
	require.True(t, errors.As(err, &nd), "want a NonDeterminismError, got %T: %v", err, err)
	require.Equal(t, 1, nd.Seq)
}
