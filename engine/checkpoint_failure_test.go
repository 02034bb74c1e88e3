package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A checkpoint interceptor that refuses (and once panics on) the record of
// an activity's result: the process survives, the run is let go and resumed
// from its record after a pause, the activity runs again (at-least-once) and
// the run completes once the interceptor accepts the record. Other runs in
// the same engine are not held back.
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
			switch offers[ev.WorkflowID] {
			case 1, 2, 4:
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
	})
	wf := engine.NewWorkflow("charge.wf", func(ctx engine.Context, n int) (int, error) { return act.Run(ctx, n) })
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)

	flaky, err := wf.Start(ctx, e.Client(), 21, &engine.StartOptions{ID: "flaky"})
	require.NoError(t, err)
	healthy, err := wf.Start(ctx, e.Client(), 1, &engine.StartOptions{ID: "healthy"})
	require.NoError(t, err)
	out, err := healthy.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out)

	out, err = flaky.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, out)

	d, err := e.Client().Describe(ctx, "flaky")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 5, offers["flaky"], "three errors and a panic refused the record, the fifth offer was taken")
	require.Len(t, ranAt, 5, "the activity ran again in each load after a refused record")
	require.Equal(t, 5, d.Loads)
	for i := 1; i < len(ranAt); i++ {
		pause := (100 * time.Millisecond) << (i - 1)
		require.GreaterOrEqual(t, ranAt[i].Sub(ranAt[i-1]), pause,
			"load %d came back before its pause: a refused record must not be retried in a hot loop", i+1)
	}
}
