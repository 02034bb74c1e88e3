//go:build unix

package interceptors

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	mnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tnoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/cpustat"
)

// countingExporter counts spans, as graft bench's exporter does.
type countingExporter struct{ n int }

func (c *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.n += len(spans)
	return nil
}

func (c *countingExporter) Shutdown(context.Context) error { return nil }

// BenchmarkWorkflow runs the interceptor work of one workflow of graft
// bench's basic scenario (a start, a segment, three activities, their
// metrics and two Info records) outside the engine, and reports the CPU
// time it costs per workflow (cpu_us/wf), which under a loaded machine is
// steadier than ns/op. The sub-benchmarks swap one of the three
// OpenTelemetry and slog back ends for a no-op at a time, so the
// differences attribute the cost: the trace SDK (with the batch span
// processor users run), the metrics SDK and the JSON handler, against our
// own code (none).
func BenchmarkWorkflow(b *testing.B) {
	sdkTracer := func(b *testing.B) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(&countingExporter{}, sdktrace.WithBlocking()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	sdkMeter := func(b *testing.B) metric.MeterProvider {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		return mp
	}
	noTracer := func(*testing.B) trace.TracerProvider { return tnoop.NewTracerProvider() }
	noMeter := func(*testing.B) metric.MeterProvider { return mnoop.NewMeterProvider() }
	jsonLogs, noLogs := slog.New(slog.NewJSONHandler(io.Discard, nil)), slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name   string
		tracer func(*testing.B) trace.TracerProvider
		meter  func(*testing.B) metric.MeterProvider
		logger *slog.Logger
	}{
		{"all", sdkTracer, sdkMeter, jsonLogs},
		{"no-trace-sdk", noTracer, sdkMeter, jsonLogs},
		{"no-metrics-sdk", sdkTracer, noMeter, jsonLogs},
		{"no-json-logs", sdkTracer, sdkMeter, noLogs},
		{"none", noTracer, noMeter, noLogs},
	} {
		b.Run(c.name, func(b *testing.B) {
			m, err := NewMetrics(MetricsConfig{MeterProvider: c.meter(b)})
			if err != nil {
				b.Fatal(err)
			}
			benchWorkflow(b, NewTracing(TracingConfig{TracerProvider: c.tracer(b)}), m, NewLogging(LoggingConfig{Logger: c.logger}))
		})
	}
}

func benchWorkflow(b *testing.B, tr *Tracing, m *Metrics, l *Logging) {
	act := func(context.Context, *engine.ActivityInput) (any, error) { return nil, nil }
	for _, ic := range []engine.ActivityInterceptor{NewRecovery(), l, m, tr} {
		next := act
		act = func(ctx context.Context, in *engine.ActivityInput) (any, error) {
			return ic.ExecuteActivity(ctx, in, next)
		}
	}
	started := func(context.Context, *engine.ClientCallInput) (any, error) { return nil, nil }
	bg := context.Background()
	b.ReportAllocs()
	cpu := cpustat.Process()
	for b.Loop() {
		start := &engine.ClientCallInput{Kind: engine.ClientStart, WorkflowID: "wf-1", WorkflowType: "bench.three"}
		_, _ = tr.ClientCall(bg, start, started)
		in := &engine.ExecuteWorkflowInput{Info: engine.WorkflowInfo{WorkflowID: "wf-1", RunID: "run-1",
			WorkflowType: "bench.three", Queue: "default", Loads: 1, StartTime: time.Now()}, Headers: start.Headers}
		// ExecuteWorkflow needs an engine.Context: its parts are called
		// in its order instead.
		seg := &segment{t: tr, in: in}
		seg.live()
		m.workflowStarted(in)
		l.emit(bg, slog.LevelInfo, "workflow started", l.workflowAttrs(make([]slog.Attr, 0, 12), seg, in.Info, in.Headers))
		for range 3 {
			h := engine.Headers{}
			seg.propagate(h)
			_, _ = act(bg, &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "bench.noop", ActivityID: "1",
				Attempt: 1, Workflow: in.Info}, Headers: h})
		}
		m.workflowEnded(in, OutcomeCompleted)
		attrs := l.workflowAttrs(make([]slog.Attr, 0, 12), seg, in.Info, in.Headers)
		l.emit(bg, slog.LevelInfo, "workflow completed", append(attrs, slog.Duration("duration", time.Since(in.Info.StartTime))))
		seg.end(OutcomeCompleted, nil)
	}
	b.ReportMetric(float64(cpustat.Process()-cpu)/float64(b.N)/1e3, "cpu_us/wf")
}
