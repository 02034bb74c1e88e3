package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/otelsum"
)

// extraNames lists the layers -with accepts.
var extraNames = []string{"interceptors", "mirror"}

// benchExtras are the optional layers a benchmark runs with (-with). Each
// extra may add interceptors, prepare the environment once the engine
// exists, add headers to each start, and check its own work at the end.
type benchExtras struct {
	o    benchOpts
	list []benchExtra
}

// benchExtra is one -with layer.
type benchExtra interface {
	prepare(ctx context.Context, env *benchEnv) error
	// headers returns h with the layer's headers for workflow i added,
	// making h when it is nil and the layer adds any; a layer that adds
	// none returns h as it is, so a start then carries no map the
	// benchmark made (none of the -with layers adds headers today).
	headers(i int, h engine.Headers) engine.Headers
	// verify checks the layer's work after n workflows and returns text for
	// the result line (" key=value ...").
	verify(ctx context.Context, env *benchEnv, n int) (string, error)
}

// setupExtras builds the layers -with names and sets their interceptors on
// cfg, in the recommended order: the observability set outermost, the
// layers that act on the call (mirror) inside it, panic recovery innermost.
func setupExtras(o benchOpts, cfg *engine.Config) (*benchExtras, error) {
	for name := range o.with {
		if !slices.Contains(extraNames, name) {
			return nil, fmt.Errorf("bench: unknown -with %q (known: %s)", name, strings.Join(extraNames, ", "))
		}
	}
	x := &benchExtras{o: o}
	var inner []engine.Interceptor // layers inside the observability set
	var obs *observabilityExtra
	for _, name := range extraNames {
		if !o.with[name] {
			continue
		}
		switch name {
		case "interceptors":
			obs = newObservabilityExtra()
			x.list = append(x.list, obs)
		case "mirror":
			m, err := newMirrorExtra(o)
			if err != nil {
				return nil, err
			}
			x.list = append(x.list, m)
			inner = append(inner, m.interceptor())
		}
	}
	if obs != nil {
		list, err := obs.interceptors(inner)
		if err != nil {
			return nil, err
		}
		cfg.Interceptors = append(cfg.Interceptors, list...)
	} else {
		cfg.Interceptors = append(cfg.Interceptors, inner...)
	}
	return x, nil
}

func (x *benchExtras) prepare(ctx context.Context, env *benchEnv) error {
	for _, e := range x.list {
		if err := e.prepare(ctx, env); err != nil {
			return err
		}
	}
	return nil
}

func (x *benchExtras) headers(i int) engine.Headers {
	var h engine.Headers
	for _, e := range x.list {
		h = e.headers(i, h)
	}
	return h
}

func (x *benchExtras) verify(ctx context.Context, env *benchEnv, n int) (string, error) {
	var tail strings.Builder
	for _, e := range x.list {
		s, err := e.verify(ctx, env, n)
		if err != nil {
			return "", err
		}
		tail.WriteString(s)
	}
	return tail.String(), nil
}

// ---- -with interceptors -----------------------------------------------------

// observabilityExtra runs the interceptors package's full set: JSON logs
// (formatted, then discarded), spans through the batch processor a
// production setup would use into an in-memory exporter, and metrics read by
// a manual reader.
type observabilityExtra struct {
	spans  *memExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newObservabilityExtra() *observabilityExtra {
	x := &observabilityExtra{spans: &memExporter{}, reader: sdkmetric.NewManualReader()}
	// Blocking: the benchmark counts every span, so none may be dropped.
	x.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(x.spans, sdktrace.WithBlocking()))
	x.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(x.reader))
	return x
}

// memExporter is an in-memory exporter that holds the spans of the latest
// batch and counts them. It neither copies spans (tracetest's exporter
// converts each into a SpanStub, work a real exporter does as serialization
// in its own process-wide goroutine, not the interceptors' cost) nor keeps
// every span, which would make the garbage collector scan all of them.
type memExporter struct {
	mu   sync.Mutex
	last []sdktrace.ReadOnlySpan
	n    atomic.Int64
}

func (m *memExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	for _, s := range spans {
		if s.Name() == "" || !s.SpanContext().IsValid() {
			return fmt.Errorf("bench: exported a span without a name or a valid context")
		}
	}
	m.mu.Lock()
	m.last = append(m.last[:0], spans...)
	m.mu.Unlock()
	m.n.Add(int64(len(spans)))
	return nil
}

func (m *memExporter) Shutdown(context.Context) error { return nil }

func (x *observabilityExtra) interceptors(inner []engine.Interceptor) ([]engine.Interceptor, error) {
	return interceptors.All(interceptors.Config{
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
		TracerProvider: x.tp,
		MeterProvider:  x.mp,
	}, inner...)
}

func (x *observabilityExtra) prepare(context.Context, *benchEnv) error { return nil }

func (x *observabilityExtra) headers(_ int, h engine.Headers) engine.Headers { return h }

// verify checks that every workflow left its spans (start, workflow
// segment, three activity attempts) and its metrics.
func (x *observabilityExtra) verify(ctx context.Context, _ *benchEnv, n int) (string, error) {
	if err := x.tp.ForceFlush(ctx); err != nil {
		return "", err
	}
	spans := int(x.spans.n.Load())
	if spans < 5*n {
		return "", fmt.Errorf("bench: %d spans for %d workflows, want at least %d", spans, n, 5*n)
	}
	sums, err := otelsum.Counters(ctx, x.reader)
	if err != nil {
		return "", err
	}
	if got := sums[interceptors.MetricWorkflowCompleted]; got != int64(n) {
		return "", fmt.Errorf("bench: %s = %d, want %d", interceptors.MetricWorkflowCompleted, got, n)
	}
	if got := sums[interceptors.MetricActivityCompleted]; got != int64(3*n) {
		return "", fmt.Errorf("bench: %s = %d, want %d", interceptors.MetricActivityCompleted, got, 3*n)
	}
	_ = x.tp.Shutdown(ctx)
	_ = x.mp.Shutdown(ctx)
	return fmt.Sprintf(" spans=%d wf_completed=%d act_completed=%d", spans,
		sums[interceptors.MetricWorkflowCompleted], sums[interceptors.MetricActivityCompleted]), nil
}
