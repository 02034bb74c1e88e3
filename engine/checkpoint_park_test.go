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

// A checkpoint interceptor that refuses a write which is not an activity's
// outcome (here the workflow's close) for good, as a legacy table that
// rejects the row would: the run is retried with a growing pause, not in a
// loop; after Config.CheckpointRefusalLimit refusals in a row it fails with
// a NeedsOperator error holding the interceptor's (the interceptor is not
// asked to record that failure). Once the legacy side is fixed, a reset
// that reuses the whole record closes the run. Other runs are not held
// back.
func TestRefusedCloseParksTheRunForAnOperator(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		offers  []time.Time // refused offers of the stubborn run's close
		refuse  atomic.Bool
		panicky atomic.Bool
	)
	refuse.Store(true)
	panicky.Store(true)
	hook := engine.CheckpointInterceptorFunc(func(ctx context.Context, tx engine.CheckpointTx, evs []*engine.CheckpointEvent) error {
		for _, ev := range evs {
			if ev.Kind != engine.CheckpointWorkflowClosed || ev.WorkflowID != "stubborn" || !refuse.Load() {
				continue
			}
			mu.Lock()
			offers = append(offers, time.Now())
			mu.Unlock()
			if panicky.CompareAndSwap(true, false) {
				panic("mirror bug")
			}
			return errors.New("legacy row rejects status 'completed'")
		}
		return nil
	})
	const limit = 4
	e := testenv.Engine(t, &engine.Config{MaxBatch: 1, CheckpointRefusalLimit: limit, Interceptors: []engine.Interceptor{hook}})
	var runs atomic.Int64
	act := engine.NewActivity("park.charge", func(ctx context.Context, n int) (int, error) {
		runs.Add(1)
		return n * 2, nil
	})
	wf := engine.NewWorkflow("park.wf", func(ctx engine.Context, n int) (int, error) { return act.Run(ctx, n) })
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 90*time.Second)

	stubborn := startBesideAHealthyRun(ctx, t, e, wf, "stubborn")
	testenv.Eventually(t, 60*time.Second, func() bool {
		d, err := e.Client().Describe(ctx, "stubborn")
		return err == nil && d.Status == engine.StatusFailed
	}, "the refused run was never parked")
	_, err := stubborn.Result(ctx)
	require.ErrorIs(t, err, engine.ErrNeedsOperator)
	require.ErrorContains(t, err, "legacy row rejects status 'completed'")
	d, err := e.Client().Describe(ctx, "stubborn")
	require.NoError(t, err)
	require.ErrorIs(t, d.Error, engine.ErrNeedsOperator)

	mu.Lock()
	got := append([]time.Time(nil), offers...)
	mu.Unlock()
	require.Len(t, got, limit, "refused %d times, then parked", limit)
	for i := 2; i < len(got); i++ {
		// Not a hot loop: each pause is at least the first one (100 ms).
		require.GreaterOrEqual(t, got[i].Sub(got[i-1]), 100*time.Millisecond, "offer %d came too soon", i)
	}
	require.EqualValues(t, 2, runs.Load(), "the activity ran once per run, not once per refusal")

	// The legacy side is fixed: a reset reusing every step closes the run.
	refuse.Store(false)
	h, err := e.Client().History(ctx, "stubborn")
	require.NoError(t, err)
	last := h[len(h)-1].Steps
	h2, err := e.Client().Reset(ctx, "stubborn", engine.ResetOptions{BeforeSeq: last[len(last)-1].Seq + 1, Reason: "legacy row fixed"})
	require.NoError(t, err)
	res, err := engine.Typed[int](h2).Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, res)
	require.EqualValues(t, 2, runs.Load(), "the reset reused the activity's result")
}
