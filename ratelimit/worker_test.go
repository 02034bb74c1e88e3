package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
)

func TestWorkerLimiter(t *testing.T) {
	t.Parallel()
	w, err := NewWorkerLimiter(WorkerLimits{MaxConcurrent: 2, PerSecond: 1000, Burst: 2}, noop.NewMeterProvider())
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	ctx := context.Background()
	a, err := Hold(ctx, w, WorkerKey, "activity-1", time.Second)
	require.NoError(t, err)
	b, err := Hold(ctx, w, WorkerKey, "activity-2", time.Second)
	require.NoError(t, err)
	_, err = w.Acquire(ctx, WorkerKey, "activity-3")
	requireDenied(t, err, ReasonConcurrency)
	require.NoError(t, a.Release(ctx))
	c, err := Hold(ctx, w, WorkerKey, "activity-3", time.Second)
	require.NoError(t, err)
	require.NoError(t, b.Release(ctx))
	require.NoError(t, c.Release(ctx))
}
