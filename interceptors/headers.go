package interceptors

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/propagation"

	"github.com/graftdev/graft/engine"
)

// HeaderCarrier lets an OpenTelemetry propagator read and write
// engine.Headers, so a trace context (or baggage) travels with a workflow
// from the client into its activities and children, across processes.
type HeaderCarrier engine.Headers

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the value of key, or "".
func (c HeaderCarrier) Get(key string) string { return c[key] }

// Set stores value under key. The carrier must not be nil.
func (c HeaderCarrier) Set(key, value string) { c[key] = value }

// Keys lists the keys present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// traceContext is the W3C Trace Context propagator (traceparent and
// tracestate headers); it is stateless, so one value serves everyone.
var traceContext propagation.TraceContext

// InjectTraceContext writes the span context of ctx into h as W3C Trace
// Context headers (traceparent, tracestate). It does nothing when ctx holds
// no valid span context. h must not be nil.
func InjectTraceContext(ctx context.Context, h engine.Headers) {
	traceContext.Inject(ctx, HeaderCarrier(h))
}

// ExtractTraceContext returns ctx with the remote span context h carries as
// W3C Trace Context headers, so a span started from it is that span's child.
// Without valid headers it returns ctx unchanged.
func ExtractTraceContext(ctx context.Context, h engine.Headers) context.Context {
	return traceContext.Extract(ctx, HeaderCarrier(h))
}

// PropagateHeaders returns a client interceptor that adds the headers fn
// derives from the caller's context to every workflow start, such as a
// customer ID or a provider key taken from an HTTP request's context. The
// headers then reach the workflow (engine.WorkflowHeadersOf), each activity
// (engine.ActivityHeadersOf) and each child workflow. A key the start already
// sets in StartOptions.Headers wins over fn's.
func PropagateHeaders(fn func(ctx context.Context) engine.Headers) engine.ClientInterceptor {
	return engine.ClientInterceptorFunc(func(ctx context.Context, in *engine.ClientCallInput,
		next engine.ClientNext) (any, error) {
		if in.Kind == engine.ClientStart {
			if add := fn(ctx); len(add) > 0 {
				h := maps.Clone(add)
				maps.Copy(h, in.Headers)
				in.Headers = h
			}
		}
		return next(ctx, in)
	})
}
