package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// collect reads every metric the reader holds, by name.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// sumCounter adds up every data point of an integer counter.
func sumCounter(t *testing.T, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	return sumWhere(t, reader, name, nil)
}

// sumWhere adds up the data points of an integer counter whose attributes
// include want.
func sumWhere(t *testing.T, reader *sdkmetric.ManualReader, name string, want map[string]string) int64 {
	t.Helper()
	data, ok := collect(t, reader)[name]
	if !ok {
		return 0
	}
	sum, ok := data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T", name, data)
	var n int64
	for _, dp := range sum.DataPoints {
		if hasAttrs(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

func hasAttrs(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.AsString() != v {
			return false
		}
	}
	return true
}

func gaugeValue(t *testing.T, reader *sdkmetric.ManualReader, name, key string) int64 {
	t.Helper()
	data, ok := collect(t, reader)[name]
	require.True(t, ok, "no %s", name)
	gauge, ok := data.(metricdata.Gauge[int64])
	require.True(t, ok, "%s is a %T", name, data)
	for _, dp := range gauge.DataPoints {
		if hasAttrs(dp.Attributes, map[string]string{AttrKey: key}) {
			return dp.Value
		}
	}
	t.Fatalf("no %s for key %q", name, key)
	return 0
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	c := newRedisClient(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	clock := newFakeClock()
	l := newTestRedisLimiter(t, c, RedisConfig{
		Limits:         StaticLimits(Limits{Concurrency: 2, LeaseTTL: time.Second}),
		Clock:          clock,
		RecoveryWindow: -1,
		MeterProvider:  mp,
	})
	ctx := context.Background()
	a, err := l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "registry", "b")
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "registry", "c")
	requireDenied(t, err, ReasonConcurrency)
	require.Equal(t, int64(2), gaugeValue(t, reader, MetricSlotsInUse, "registry"))
	require.Equal(t, int64(2), gaugeValue(t, reader, MetricSlotsLimit, "registry"))

	clock.Advance(2 * time.Second) // a and b expire unreleased
	_, err = l.Acquire(ctx, "registry", "c")
	require.NoError(t, err)
	_, err = l.Renew(ctx, a) // a's call was still running after all
	require.NoError(t, err)
	_, err = Wait(ctx, l, "registry", "d", 0)
	var snooze *engine.SnoozeError
	require.ErrorAs(t, err, &snooze)

	outcome := func(o string) int64 {
		return sumWhere(t, reader, MetricAcquisitions, map[string]string{AttrKey: "registry", AttrOutcome: o})
	}
	require.Equal(t, int64(3), outcome("granted"))
	require.Equal(t, int64(1), outcome("held"))
	require.Equal(t, int64(2), outcome("denied_concurrency"))
	require.Equal(t, int64(2), sumCounter(t, reader, MetricExpired))
	require.Equal(t, int64(1), sumCounter(t, reader, MetricRestored))
	require.Equal(t, int64(1), sumCounter(t, reader, MetricSnoozes))
	require.Equal(t, int64(2), gaugeValue(t, reader, MetricSlotsInUse, "registry"))
	hist, ok := collect(t, reader)[MetricWaitDuration].(metricdata.Histogram[float64])
	require.True(t, ok)
	require.Len(t, hist.DataPoints, 1)
	require.Equal(t, uint64(1), hist.DataPoints[0].Count)

	// Store errors, from a limiter whose Redis is gone.
	down := newTestRedisLimiter(t, failFastClient(t, "127.0.0.1:1"), RedisConfig{
		Limits: StaticLimits(Limits{}), Prefix: "graft:test:metrics-down",
		MeterProvider: mp,
	})
	_, err = down.Acquire(ctx, "registry", "a")
	require.Error(t, err)
	require.Equal(t, int64(1), sumWhere(t, reader, MetricStoreErrors, map[string]string{AttrOp: "acquire"}))
}
