package interceptors_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
)

func benchActivity(b *testing.B, list ...engine.Interceptor) {
	call := func(ctx context.Context, in *engine.ActivityInput) (any, error) { return in.Args, nil }
	for i := len(list) - 1; i >= 0; i-- {
		ic, next := list[i].(engine.ActivityInterceptor), call
		call = func(ctx context.Context, in *engine.ActivityInput) (any, error) {
			return ic.ExecuteActivity(ctx, in, next)
		}
	}
	h := engine.Headers{"traceparent": "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"}
	in := &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "bench.noop", ActivityID: "1", Attempt: 1,
		Workflow: engine.WorkflowInfo{WorkflowID: "wf", RunID: "run", WorkflowType: "bench.three", StartTime: time.Now()}},
		Headers: h, Args: 1}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := call(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkActivity measures what each interceptor adds to one activity
// attempt.
func BenchmarkActivity(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	m, err := interceptors.NewMetrics(interceptors.MetricsConfig{MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	b.Run("tracing", func(b *testing.B) {
		benchActivity(b, interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: tp}))
	})
	b.Run("metrics", func(b *testing.B) { benchActivity(b, m) })
	b.Run("logging", func(b *testing.B) {
		benchActivity(b, interceptors.NewLogging(interceptors.LoggingConfig{Logger: logger}))
	})
	b.Run("recovery", func(b *testing.B) { benchActivity(b, interceptors.NewRecovery()) })
	all, err := interceptors.All(interceptors.Config{Logger: logger, TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("all", func(b *testing.B) { benchActivity(b, all...) })
}
