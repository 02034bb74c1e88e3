package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A checkpoint interceptor that refuses (and once panics on) the record of
// an activity's result: the process survives, the attempt counts as failed
// with the interceptor's error, the run is let go and resumed from that
// record, the next attempt follows the retry policy's backoff, and the run
// completes once the interceptor accepts the record. Other runs in the same
// engine are not held back.
func TestCheckpointInterceptorFailureResumesTheRun(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		offers = map[string]int{} // workflow ID -> activity records offered so far
	)
	hook := engine.CheckpointInterceptorFunc(func(ctx context.Context, tx engine.CheckpointTx, evs []*engine.CheckpointEvent) error {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			if ev.Kind != engine.CheckpointActivityCompleted || ev.WorkflowID != "flaky" {
				continue
			}
			offers[ev.WorkflowID]++
			// Each refused write is offered twice: whole (with the run's
			// end), then the activity's outcome alone.
			switch offers[ev.WorkflowID] {
			case 1, 2, 4, 5, 6, 7, 8:
				return errors.New("legacy table locked")
			case 3:
				panic("mirror bug")
			}
		}
		return nil
	})
	// Batches of one: every offer of the record is then a load of its own
	// (a refused batch of several is retried op by op at once).
	e := testenv.Engine(t, &engine.Config{LeaseTTL: 2 * time.Second, MaxBatch: 1, Interceptors: []engine.Interceptor{hook}})
	var ranAt []time.Time // when the flaky run's activity ran
	act := engine.NewActivity("charge", func(ctx context.Context, n int) (int, error) {
		if engine.ActivityInfoOf(ctx).Workflow.WorkflowID == "flaky" {
			mu.Lock()
			ranAt = append(ranAt, time.Now())
			mu.Unlock()
		}
		return n * 2, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 100 * time.Millisecond}})
	wf := engine.NewWorkflow("charge.wf", func(ctx engine.Context, n int) (int, error) { return act.Run(ctx, n) })
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)

	flaky := startBesideAHealthyRun(ctx, t, e, wf, "flaky")
	out, err := flaky.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, out)

	d, err := e.Client().Describe(ctx, "flaky")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 9, offers["flaky"], "four loads' records were refused (twice each: whole, then alone), the fifth was taken")
	require.Len(t, ranAt, 5, "each refused record failed its attempt, and the next one ran")
	require.GreaterOrEqual(t, d.Loads, 5, "each refusal let the run go")
	for i := 1; i < len(ranAt); i++ {
		pause := (100 * time.Millisecond) << (i - 1)
		require.GreaterOrEqual(t, ranAt[i].Sub(ranAt[i-1]), pause,
			"attempt %d came before the retry policy's backoff: a refused record must not be retried in a hot loop", i+1)
	}
	hist, err := e.Client().History(ctx, "flaky")
	require.NoError(t, err)
	require.Equal(t, 5, hist[0].Steps[0].Attempts)
}

// A checkpoint interceptor that refuses the record of an activity's outcome
// fails that attempt, with the interceptor's error, through the activity's
// retry policy: the attempts that follow wait the policy's backoff, and once
// the policy gives up the step fails with the interceptor's error, which the
// workflow sees.
func TestCheckpointRefusalFailsTheAttempt(t *testing.T) {
	t.Parallel()
	hook := engine.CheckpointInterceptorFunc(func(ctx context.Context, tx engine.CheckpointTx, evs []*engine.CheckpointEvent) error {
		for _, ev := range evs {
			if ev.Kind == engine.CheckpointActivityCompleted && ev.WorkflowID == "refused" {
				return errors.New("legacy table locked")
			}
		}
		return nil
	})
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{hook}})
	var ran atomic.Int32
	act := engine.NewActivity("refused.act", func(ctx context.Context, n int) (int, error) {
		ran.Add(1)
		return n, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 3}})
	wf := engine.NewWorkflow("refused.wf", func(ctx engine.Context, n int) (int, error) { return act.Run(ctx, n) })
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := wf.Start(ctx, e.Client(), 1, &engine.StartOptions{ID: "refused"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var app *engine.ApplicationError
	require.ErrorAs(t, err, &app)
	require.Equal(t, engine.ErrorTypeCheckpointRefused, app.Type, "got %v", err)
	require.Contains(t, app.Error(), "legacy table locked")
	require.EqualValues(t, 3, ran.Load(), "MaximumAttempts bounds the attempts whose records were refused")
	hist, err := e.Client().History(ctx, "refused")
	require.NoError(t, err)
	st := hist[0].Steps[0]
	require.Equal(t, "failed", st.Status)
	require.Equal(t, 3, st.Attempts)
}

// startBesideAHealthyRun starts wf (which doubles its input) with 21 as run
// id and, beside it, a run "healthy" with 1, which must complete whatever
// becomes of id: one run's refused checkpoints hold no other run back.
func startBesideAHealthyRun(ctx context.Context, t *testing.T, e *engine.Engine, wf *engine.Workflow[int, int], id string) *engine.Run[int] {
	t.Helper()
	run, err := wf.Start(ctx, e.Client(), 21, &engine.StartOptions{ID: id})
	require.NoError(t, err)
	healthy, err := wf.Start(ctx, e.Client(), 1, &engine.StartOptions{ID: "healthy"})
	require.NoError(t, err)
	out, err := healthy.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out)
	return run
}
