package interceptors_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
)

// TestMetricsCountersUnderDeltaTemporality runs activity attempts through
// Metrics alone, collecting with a reader that asks for deltas: each
// collection reports the attempts made since the one before, as monotonic
// sums, and a count that did not move since reports zero. The duration
// histogram keeps its exemplars, which name the attempt's span.
func TestMetricsCountersUnderDeltaTemporality(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(
		func(sdkmetric.InstrumentKind) metricdata.Temporality { return metricdata.DeltaTemporality }))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: mp})
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "attempt")
	defer span.End()

	attempt := func(n int, fail bool) {
		in := &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "d.step", ActivityID: "1", Attempt: n}}
		_, _ = m.ExecuteActivity(ctx, in, func(context.Context, *engine.ActivityInput) (any, error) {
			if fail {
				return nil, errors.New("transient")
			}
			return nil, nil
		})
	}
	act := attribute.String(interceptors.AttrActivityType, "d.step")

	attempt(1, true)
	attempt(2, false)
	attempt(1, false)
	got := collect(t, reader)
	require.EqualValues(t, 3, got.sum(interceptors.MetricActivityStarted, act))
	require.EqualValues(t, 2, got.sum(interceptors.MetricActivityCompleted, act,
		attribute.String(interceptors.AttrOutcome, interceptors.OutcomeCompleted)))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityFailed, act,
		attribute.String(interceptors.AttrOutcome, interceptors.OutcomeFailed)))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityRetried, act))
	started, ok := got.metric(interceptors.MetricActivityStarted)
	require.True(t, ok)
	sum := started.Data.(metricdata.Sum[int64])
	require.True(t, sum.IsMonotonic)
	require.Equal(t, metricdata.DeltaTemporality, sum.Temporality)
	hist, ok := got.metric(interceptors.MetricActivityDuration)
	require.True(t, ok)
	dps := hist.Data.(metricdata.Histogram[float64]).DataPoints
	require.NotEmpty(t, dps)
	for _, dp := range dps {
		require.NotEmpty(t, dp.Exemplars, "a duration's exemplar links it to the attempt's span")
		require.Equal(t, [16]byte(span.SpanContext().TraceID()), [16]byte(dp.Exemplars[0].TraceID))
	}

	attempt(1, false)
	got = collect(t, reader)
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityStarted, act))
	require.EqualValues(t, 1, got.sum(interceptors.MetricActivityCompleted, act))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityFailed, act))
	require.EqualValues(t, 0, got.sum(interceptors.MetricActivityRetried, act))
}
