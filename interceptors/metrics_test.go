package interceptors_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

// collected is one collection of a ManualReader, with lookups.
type collected metricdata.ResourceMetrics

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	return collected(rm)
}

func (c collected) metric(name string) (metricdata.Metrics, bool) {
	for _, sm := range c.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func matches(set attribute.Set, kvs []attribute.KeyValue) bool {
	for _, kv := range kvs {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// sum adds the data points of counter name whose attributes include kvs.
func (c collected) sum(name string, kvs ...attribute.KeyValue) int64 {
	m, ok := c.metric(name)
	if !ok {
		return 0
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		if matches(dp.Attributes, kvs) {
			n += dp.Value
		}
	}
	return n
}

// count adds the counts of histogram name's data points whose attributes include kvs.
func (c collected) count(name string, kvs ...attribute.KeyValue) uint64 {
	m, ok := c.metric(name)
	if !ok {
		return 0
	}
	var n uint64
	for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
		if matches(dp.Attributes, kvs) {
			n += dp.Count
		}
	}
	return n
}

func TestMetricsValues(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: mp})
	require.NoError(t, err)

	step := engine.NewActivity("m.step", func(ctx context.Context, in string) (string, error) { return in, nil })
	var flakyCalls atomic.Int32
	flaky := engine.NewActivity("m.flaky", func(ctx context.Context, in string) (string, error) {
		if flakyCalls.Add(1) == 1 {
			return "", errors.New("transient")
		}
		return in, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}})
	boom := engine.NewActivity("m.boom", func(ctx context.Context, in string) (string, error) {
		return "", engine.NewNonRetryableError("Boom", "no", nil)
	})
	ok := resumeWorkflow("m.ok", step)
	fails := engine.NewWorkflow("m.fails", func(ctx engine.Context, in string) (string, error) {
		if _, err := flaky.Run(ctx, in); err != nil {
			return "", err
		}
		return boom.Run(ctx, in)
	})
	e := newEngine(t, []engine.Interceptor{m}, step, flaky, boom, ok, fails)

	// Two runs of m.ok, each resumed by replay after its signal wait.
	require.Equal(t, "a,b", runResume(t, ctx, e, ok, "m-ok-1"))
	require.Equal(t, "a,b", runResume(t, ctx, e, ok, "m-ok-2"))
	// A query replays a run: it counts nothing.
	_, err = e.Client().Query(ctx, "m-ok-1", "state", nil)
	require.NoError(t, err)
	run, err := fails.Start(ctx, e.Client(), "x", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.Error(t, err)

	got := collect(t, reader)
	wfOK := attribute.String(interceptors.AttrWorkflowType, "m.ok")
	wfFails := attribute.String(interceptors.AttrWorkflowType, "m.fails")
	require.EqualValues(t, 2, got.sum(interceptors.MetricWorkflowStarted, wfOK), "a resume is not a start")
	require.EqualValues(t, 2, got.sum(interceptors.MetricWorkflowCompleted, wfOK,
		attribute.String(interceptors.AttrOutcome, interceptors.OutcomeCompleted)))
	require.EqualValues(t, 0, got.sum(interceptors.MetricWorkflowFailed, wfOK))
	require.EqualValues(t, 2, got.count(interceptors.MetricWorkflowDuration, wfOK))
	require.EqualValues(t, 1, got.sum(interceptors.MetricWorkflowStarted, wfFails))
	require.EqualValues(t, 0, got.sum(interceptors.MetricWorkflowCompleted, wfFails))
	require.EqualValues(t, 1, got.sum(interceptors.MetricWorkflowFailed, wfFails,
		attribute.String(interceptors.AttrOutcome, interceptors.OutcomeFailed)))
	require.EqualValues(t, 1, got.count(interceptors.MetricWorkflowDuration, wfFails))

	actStep := attribute.String(interceptors.AttrActivityType, "m.step")
	require.EqualValues(t, 4, got.sum(interceptors.MetricActivityStarted, actStep), "replayed steps are not counted")
	require.EqualValues(t, 4, got.sum(interceptors.MetricActivityCompleted, actStep))
	require.EqualValues(t, 4, got.count(interceptors.MetricActivityDuration, actStep))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityRetried, actStep))

	actFlaky := attribute.String(interceptors.AttrActivityType, "m.flaky")
	require.EqualValues(t, 2, got.sum(interceptors.MetricActivityStarted, actFlaky))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityFailed, actFlaky))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityRetried, actFlaky))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityCompleted, actFlaky))
	require.EqualValues(t, 1, got.count(interceptors.MetricActivityDuration, actFlaky,
		attribute.String(interceptors.AttrOutcome, interceptors.OutcomeFailed)))

	actBoom := attribute.String(interceptors.AttrActivityType, "m.boom")
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityStarted, actBoom), "a non-retryable error is not retried")
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityFailed, actBoom))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityRetried, actBoom))
}

func TestMetricsSnoozeIsNotAnAttempt(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: mp})
	require.NoError(t, err)
	var calls atomic.Int32
	// A limiter inside Metrics snoozes the first call.
	limiter := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput,
		next engine.ActivityNext) (any, error) {
		if calls.Add(1) == 1 {
			return nil, engine.Snooze(10*time.Millisecond, "no slot")
		}
		return next(ctx, in)
	})
	step := engine.NewActivity("ms.step", func(ctx context.Context, in string) (string, error) { return in, nil })
	wf := engine.NewWorkflow("ms.wf", func(ctx engine.Context, in string) (string, error) { return step.Run(ctx, in) })
	e := newEngine(t, []engine.Interceptor{m, limiter}, step, wf)
	run, err := wf.Start(ctx, e.Client(), "x", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)

	got := collect(t, reader)
	act := attribute.String(interceptors.AttrActivityType, "ms.step")
	require.EqualValues(t, 2, got.sum(interceptors.MetricActivityStarted, act))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivitySnoozed, act))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityCompleted, act))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityFailed, act))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityRetried, act), "a snooze does not spend an attempt")
	require.EqualValues(t, 1, got.count(interceptors.MetricActivityDuration, act))
}
