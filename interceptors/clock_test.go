package interceptors_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
)

// TestActivityDurationsCoverTheAttempt checks the durations Metrics and
// Logging give an attempt, timed on the monotonic clock alone: each is at
// least the time the activity spent, which waits until 20ms have passed.
func TestActivityDurationsCoverTheAttempt(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: mp})
	require.NoError(t, err)
	h := newRecordHandler()
	l := interceptors.NewLogging(interceptors.LoggingConfig{Logger: slog.New(h)})

	const spent = 20 * time.Millisecond
	var took time.Duration
	act := func(context.Context, *engine.ActivityInput) (any, error) {
		begin := time.Now()
		for time.Since(begin) < spent {
			time.Sleep(time.Millisecond)
		}
		took = time.Since(begin)
		return nil, nil
	}
	in := &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "clock.step", ActivityID: "1", Attempt: 1}}
	_, err = m.ExecuteActivity(context.Background(), in, func(ctx context.Context, in *engine.ActivityInput) (any, error) {
		return l.ExecuteActivity(ctx, in, act)
	})
	require.NoError(t, err)

	recs := h.find("activity completed", "activity", "clock.step")
	require.Len(t, recs, 1)
	logged, ok := recs[0].Attrs["duration"].(time.Duration)
	require.True(t, ok, "the record has a duration")
	require.GreaterOrEqual(t, logged, took)

	hist, ok := collect(t, reader).metric(interceptors.MetricActivityDuration)
	require.True(t, ok)
	dps := hist.Data.(metricdata.Histogram[float64]).DataPoints
	require.Len(t, dps, 1)
	require.GreaterOrEqual(t, dps[0].Sum, took.Seconds())
}
