package engine_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A worker started with the ID of a worker that stopped without giving its
// runs back takes them over at once: the run resumes although its lease has
// an hour left.
func TestWorkerTakesOverItsPredecessorsRuns(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	stuck := make(chan struct{})
	act := engine.NewActivity("takeover.act", func(ctx context.Context, _ struct{}) (int32, error) {
		n := calls.Add(1)
		if n == 1 {
			<-stuck // the first worker's copy never ends: its process is as good as dead
		}
		return n, nil
	})
	wf := engine.NewWorkflow("takeover.wf", func(ctx engine.Context, _ struct{}) (int32, error) {
		return act.Run(ctx, struct{}{})
	})
	cfg := &engine.Config{LeaseTTL: time.Hour}
	first := testenv.Engine(t, cfg)
	require.NoError(t, first.Register(act, wf))
	testenv.Worker(t, first, engine.WorkerConfig{ID: "node-1"})
	t.Cleanup(func() { close(stuck) })
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := wf.Start(ctx, first.Client(), struct{}{}, &engine.StartOptions{ID: "taken-over"})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() bool { return calls.Load() == 1 }, "the activity never started")

	cfg.Schema = first.Schema()
	second := testenv.Engine(t, cfg)
	require.NoError(t, second.Register(act, wf))
	testenv.Worker(t, second, engine.WorkerConfig{ID: "node-1"})
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, out, "the second worker ran the activity again")
	info, err := second.Client().Describe(ctx, "taken-over")
	require.NoError(t, err)
	require.Equal(t, 2, info.Loads)
}
