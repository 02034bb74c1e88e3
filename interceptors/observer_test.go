package interceptors_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

// TestAllSameAsThree runs one workflow (an activity, a signal it waits for
// unloaded and receives by replay, an activity that fails once and panics
// once, a query within a trace) under Tracing, Metrics, Logging and
// Recovery listed one by one, and under All, which combines the first
// three (and Recovery too when nothing goes between): the
// spans (names, kinds, parents, statuses, attributes), the metrics and the
// log records (levels, messages, attributes) are the same. Values that
// differ from run to run (IDs, times, durations) are left out.
func TestAllSameAsThree(t *testing.T) {
	t.Parallel()
	three := func(cfg interceptors.Config) []engine.Interceptor {
		m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: cfg.MeterProvider})
		require.NoError(t, err)
		return []engine.Interceptor{interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: cfg.TracerProvider}),
			m, interceptors.NewLogging(interceptors.LoggingConfig{Logger: cfg.Logger, Headers: cfg.LogHeaders}),
			interceptors.NewRecovery()}
	}
	all := func(inner ...engine.Interceptor) func(cfg interceptors.Config) []engine.Interceptor {
		return func(cfg interceptors.Config) []engine.Interceptor {
			list, err := interceptors.All(cfg, inner...)
			require.NoError(t, err)
			return list
		}
	}
	// Between them, an interceptor that changes nothing keeps Recovery
	// apart; without, All's one interceptor recovers too.
	between := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput,
		next engine.ActivityNext) (any, error) {
		return next(ctx, in)
	})
	want := observeOneRun(t, three)
	require.Equal(t, want, observeOneRun(t, all()), "All()")
	require.Equal(t, want, observeOneRun(t, all(between)), "All(between)")
}

// observeOneRun runs the workflow of TestAllSameAsThree with the
// interceptors list makes and returns what they reported, one line a span,
// metric data point and record, sorted.
func observeOneRun(t *testing.T, list func(interceptors.Config) []engine.Interceptor) []string {
	ctx := testenv.Ctx(t, 60*time.Second)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	logs := newRecordHandler()

	// The step's second call (the first after the signal) fails, its
	// third panics.
	var calls atomic.Int32
	step := engine.NewActivity("same.step", func(_ context.Context, in string) (string, error) {
		switch calls.Add(1) {
		case 2:
			return "", errors.New("transient")
		case 3:
			panic("boom")
		}
		return in + "!", nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: time.Millisecond}})
	wf := resumeWorkflow("same.wf", step)
	// Unloads take long enough that only the signal's wait unloads the run,
	// not the step's retry.
	e := testenv.Engine(t, &engine.Config{UnloadAfter: 300 * time.Millisecond, Interceptors: list(interceptors.Config{
		Logger: slog.New(logs), TracerProvider: tp, MeterProvider: mp})})
	require.NoError(t, e.Register(step, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})

	ctx, caller := tp.Tracer("test").Start(ctx, "caller")
	require.Equal(t, "a!,b!", runResume(t, ctx, e, wf, "same-1"))
	_, err := e.Client().Query(ctx, "same-1", "state", nil)
	require.NoError(t, err)
	caller.End()

	var lines []string
	all := spans(exp.GetSpans())
	for _, sp := range all {
		parent := ""
		if sp.Parent.IsValid() {
			parent = findParent(t, all, sp).Name
		}
		var kv []string
		for _, a := range sp.Attributes {
			if a.Key != interceptors.AttrRunID && a.Key != interceptors.AttrActivityID {
				kv = append(kv, string(a.Key)+"="+a.Value.String())
			}
		}
		sort.Strings(kv)
		lines = append(lines, fmt.Sprintf("span %q kind=%s parent=%q status=%s events=%d links=%d %s",
			sp.Name, sp.SpanKind, parent, sp.Status.Code, len(sp.Events), len(sp.Links), strings.Join(kv, " ")))
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	enc := attribute.DefaultEncoder()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("metric %s %s = %d", m.Name, dp.Attributes.Encoded(enc), dp.Value))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("metric %s %s count %d", m.Name, dp.Attributes.Encoded(enc), dp.Count))
				}
			}
		}
	}
	logs.mu.Lock()
	for _, r := range *logs.records {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(r.Attrs)) {
			switch k {
			case "run_id", "activity_id", "trace_id", "span_id", "duration", "stack":
				kv = append(kv, k)
			default:
				kv = append(kv, fmt.Sprintf("%s=%v", k, r.Attrs[k]))
			}
		}
		lines = append(lines, fmt.Sprintf("log %s %q %s", r.Level, r.Msg, strings.Join(kv, " ")))
	}
	logs.mu.Unlock()
	sort.Strings(lines)
	return lines
}
