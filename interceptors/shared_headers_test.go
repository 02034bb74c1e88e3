package interceptors_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

// writeFirst writes a header into its first activity call's headers in
// place, as an outbound interceptor may (it does not embed
// engine.HeadersReadOnly).
type writeFirst struct{ engine.InterceptorBase }

func (writeFirst) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next engine.OutboundNext) error {
	if in.Kind == engine.OutboundActivity && in.Name == "shared.first" {
		in.Headers["only-first"] = "x"
	}
	return next(ctx, in)
}

// TestSegmentHeadersInEachCall: each activity call of a segment carries
// the segment span's context and the run's headers, whether All's Tracing
// puts its one copy of them into every call (the engine lends the run's
// headers shared, All alone) or writes into each call's own (an inner
// interceptor writes in place), and what the inner one writes into one
// call stays in that call.
func TestSegmentHeadersInEachCall(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		inner []engine.Interceptor
	}{{"shared", nil}, {"written in place", []engine.Interceptor{writeFirst{}}}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			list, err := interceptors.All(interceptors.Config{TracerProvider: tp}, c.inner...)
			require.NoError(t, err)
			headers := func(ctx context.Context, _ struct{}) (engine.Headers, error) {
				return engine.ActivityHeadersOf(ctx), nil
			}
			first, second := engine.NewActivity("shared.first", headers), engine.NewActivity("shared.second", headers)
			wf := engine.NewWorkflow("shared.wf", func(ctx engine.Context, _ struct{}) ([]engine.Headers, error) {
				a, err := first.Run(ctx, struct{}{})
				if err != nil {
					return nil, err
				}
				b, err := second.Run(ctx, struct{}{})
				return []engine.Headers{a, b, engine.WorkflowHeadersOf(ctx)}, err
			})
			e := newEngine(t, list, first, second, wf)
			ctx := testenv.Ctx(t, 30*time.Second)
			run, err := wf.Start(ctx, e.Client(), struct{}{}, &engine.StartOptions{ID: "shared-" + c.name,
				Headers: engine.Headers{"customer": "c1"}})
			require.NoError(t, err)
			out, err := run.Result(ctx)
			require.NoError(t, err)
			require.NoError(t, tp.ForceFlush(ctx))
			var segment string
			for _, s := range exp.GetSpans() {
				if s.Name == "workflow shared.wf" {
					segment = s.SpanContext.SpanID().String()
				}
			}
			require.NotEmpty(t, segment)
			for i, h := range out[:2] {
				require.Equal(t, "c1", h["customer"], i)
				require.Contains(t, h["traceparent"], "-"+segment+"-", i)
			}
			require.Equal(t, c.inner != nil, out[0]["only-first"] == "x")
			require.NotContains(t, out[1], "only-first")
			require.Equal(t, "c1", out[2]["customer"])
			require.NotContains(t, out[2], "only-first", "the run's headers")
			require.NotContains(t, out[2]["traceparent"], "-"+segment+"-", "the run's headers carry the start's span")
		})
	}
}
