package interceptors

import (
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
)

// Config configures All. Zero fields take the defaults of the interceptor
// they configure.
type Config struct {
	// Logger receives Logging's records. Default slog.Default().
	Logger *slog.Logger
	// LogHeaders names run headers Logging adds to its records. Default none.
	LogHeaders []string
	// TracerProvider creates Tracing's spans. Default: the otel global.
	TracerProvider trace.TracerProvider
	// Propagator carries span contexts in headers. Default: W3C Trace Context.
	Propagator propagation.TextMapPropagator
	// MeterProvider receives Metrics' instruments. Default: the otel global.
	MeterProvider metric.MeterProvider
}

// All returns the recommended chain, outermost first: Tracing, Metrics and
// Logging, then inner in the order given (for example a rate limiter, the
// compensations and the legacy mirror), then Recovery closest to the
// workflow and activity code. Use the result as engine.Config.Interceptors.
//
// Tracing, Metrics and Logging come as one interceptor, the list's first,
// that does what the three would in that order (the same spans, metrics
// and records) in one frame of each chain instead of three. Without inner
// it does Recovery's work too, innermost, and is the list's only entry.
func All(cfg Config, inner ...engine.Interceptor) ([]engine.Interceptor, error) {
	m, err := NewMetrics(MetricsConfig{MeterProvider: cfg.MeterProvider})
	if err != nil {
		return nil, err
	}
	obs := &observer{
		Tracing: NewTracing(TracingConfig{TracerProvider: cfg.TracerProvider, Propagator: cfg.Propagator}),
		m:       m,
		l:       NewLogging(LoggingConfig{Logger: cfg.Logger, Headers: cfg.LogHeaders}),
	}
	if len(inner) == 0 {
		obs.rec = NewRecovery()
		return []engine.Interceptor{obs}, nil
	}
	list := append([]engine.Interceptor{obs}, inner...)
	return append(list, NewRecovery()), nil
}
