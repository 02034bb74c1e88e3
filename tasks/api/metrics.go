package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Prometheus is an OpenTelemetry meter provider whose instruments are
// served as Prometheus text: give Provider to the engine's interceptors
// (interceptors.Config.MeterProvider) and to Config.MeterProvider, and
// Handler to Config.Metrics.
type Prometheus struct {
	// Provider is the meter provider to record on.
	Provider *sdkmetric.MeterProvider
	// Handler serves the Prometheus text exposition of everything recorded.
	Handler http.Handler
}

// NewPrometheus returns a meter provider exported through the OpenTelemetry
// Prometheus exporter, on a registry of its own (no global state).
func NewPrometheus() (*Prometheus, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("api: prometheus exporter: %w", err)
	}
	return &Prometheus{Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}, nil
}

// Metric names the server records.
const (
	// MetricRequests counts API requests by route and status code.
	MetricRequests = "graft.api.requests"
	// MetricRequestDuration is the duration of API requests, in seconds.
	MetricRequestDuration = "graft.api.request.duration"
)

// requestMetrics are the server's own instruments.
type requestMetrics struct {
	count metric.Int64Counter
	dur   metric.Float64Histogram
}

func newRequestMetrics(mp metric.MeterProvider) (*requestMetrics, error) {
	meter := mp.Meter("github.com/graftdev/graft/tasks/api")
	m := &requestMetrics{}
	var err error
	if m.count, err = meter.Int64Counter(MetricRequests, metric.WithDescription("API requests by route and status."), metric.WithUnit("{request}")); err != nil {
		return nil, err
	}
	if m.dur, err = meter.Float64Histogram(MetricRequestDuration, metric.WithDescription("API request duration."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)); err != nil {
		return nil, err
	}
	return m, nil
}

// wrap counts and times the requests h serves, per route pattern (h must
// be the mux, which sets the pattern).
func (m *requestMetrics) wrap(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		attrs := metric.WithAttributes(attribute.String("route", route), attribute.String("status", strconv.Itoa(sw.status)))
		m.count.Add(r.Context(), 1, attrs)
		m.dur.Record(r.Context(), time.Since(start).Seconds(), attrs)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
