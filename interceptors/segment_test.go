package interceptors

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"

	"github.com/graftdev/graft/engine"
)

// TestSegmentPropagatesWhatThePropagatorWrites checks that the trace
// context a segment writes once and copies into each call's headers is
// what the propagator writes into them itself, over headers the call
// already has, for a propagator that writes several keys (trace context and
// baggage).
func TestSegmentPropagatesWhatThePropagatorWrites(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tr := NewTracing(TracingConfig{TracerProvider: allocsTracer(t), Propagator: prop})
	member, err := baggage.NewMember("customer", "c-1")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	run := engine.Headers{"tenant": "t-1", "tracestate": "k=v", "traceparent": parentHeader}
	parent := engine.Headers{}
	prop.Inject(baggage.ContextWithBaggage(tr.prop.Extract(context.Background(), HeaderCarrier(run)), bag), HeaderCarrier(parent))
	for k, v := range run {
		if _, ok := parent[k]; !ok {
			parent[k] = v
		}
	}
	seg := &segment{t: tr, in: &engine.ExecuteWorkflowInput{Info: engine.WorkflowInfo{WorkflowType: "wf"}, Headers: parent}}
	seg.live()
	for range 2 {
		got, want := parent.Clone(), parent.Clone()
		seg.propagate(got)
		prop.Inject(seg.spanCtx, HeaderCarrier(want))
		require.Equal(t, want, got)
		require.NotEqual(t, parent["traceparent"], got["traceparent"])
		require.Equal(t, "customer=c-1", got["baggage"])
	}
	require.Equal(t, []string{"tracestate", "traceparent", "baggage"}, seg.headers.Keys())
	require.Equal(t, "customer=c-1", seg.headers.Get("baggage"))
}
