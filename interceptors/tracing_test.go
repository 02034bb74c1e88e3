package interceptors_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

// spans is what an in-memory exporter holds, with lookups for assertions.
type spans tracetest.SpanStubs

func (s spans) named(name string) spans {
	var out spans
	for _, sp := range s {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

func (s spans) one(t *testing.T, name string) tracetest.SpanStub {
	t.Helper()
	got := s.named(name)
	require.Len(t, got, 1, "spans named %q", name)
	return got[0]
}

func attr(sp tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range sp.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func requireChild(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	require.Equal(t, parent.SpanContext.TraceID(), child.SpanContext.TraceID(), "%s in %s's trace", child.Name, parent.Name)
	require.Equal(t, parent.SpanContext.SpanID(), child.Parent.SpanID(), "%s is a child of %s", child.Name, parent.Name)
}

func TestTracingSpanTree(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	var flakyCalls atomic.Int32
	step := engine.NewActivity("tr.step", func(ctx context.Context, in string) (string, error) {
		// The activity's context carries its span, for spans of its own.
		_, inner := tp.Tracer("test").Start(ctx, "inner "+in)
		inner.End()
		return in + "!", nil
	})
	flaky := engine.NewActivity("tr.flaky", func(ctx context.Context, in string) (string, error) {
		if flakyCalls.Add(1) == 1 {
			return "", errors.New("transient")
		}
		return in, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}})
	child := engine.NewWorkflow("tr.child", func(ctx engine.Context, in string) (string, error) {
		return step.Run(ctx, "child-"+in)
	})
	wf := engine.NewWorkflow("tr.parent", func(ctx engine.Context, in string) (string, error) {
		engine.SetQueryHandler(ctx, "state", func(struct{}) (string, error) { return "ok", nil })
		if _, err := step.Run(ctx, "one"); err != nil {
			return "", err
		}
		sig, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
		if err != nil {
			return "", err
		}
		if _, err := flaky.Run(ctx, sig); err != nil {
			return "", err
		}
		if _, err := step.Run(ctx, "two"); err != nil {
			return "", err
		}
		return child.RunChild(ctx, in, nil)
	})
	tracing := interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: tp})
	e := newEngine(t, []engine.Interceptor{tracing}, step, flaky, child, wf)
	c := e.Client()

	ctx, caller := tp.Tracer("test").Start(ctx, "caller")
	run, err := wf.Start(ctx, c, "x", &engine.StartOptions{ID: "tr-1"})
	require.NoError(t, err)
	waitUnloaded(t, e, "tr-1")
	// A query replays the open run up to its wait: no workflow spans.
	_, err = c.Query(ctx, "tr-1", "state", nil)
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "tr-1", "go", "sig"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "child-x!", out)
	_, err = c.Query(ctx, "tr-1", "state", nil)
	require.NoError(t, err)
	caller.End()

	all := spans(exp.GetSpans())
	root := all.one(t, "caller")
	for _, sp := range all {
		require.Equal(t, root.SpanContext.TraceID(), sp.SpanContext.TraceID(), "span %s is in the caller's trace", sp.Name)
	}
	start := all.one(t, "start tr.parent")
	requireChild(t, start, root)
	require.Equal(t, trace.SpanKindProducer, start.SpanKind)
	require.Equal(t, "tr-1", attr(start, interceptors.AttrWorkflowID).AsString())
	require.Equal(t, "tr.parent", attr(start, interceptors.AttrWorkflowType).AsString())

	// Execution segments: the first run up to the signal wait, the resume
	// that receives the signal and starts the child and, if the run unloaded
	// while its child ran, the resume that returns the child's result.
	segs := all.named("workflow tr.parent")
	require.Contains(t, []int{2, 3}, len(segs), "one span per segment; replays and queries add none")
	slices.SortFunc(segs, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	first, second, last := segs[0], segs[1], segs[len(segs)-1]
	for i, s := range segs {
		requireChild(t, s, start)
		require.Equal(t, "tr-1", attr(s, interceptors.AttrWorkflowID).AsString())
		require.Equal(t, run.RunID, attr(s, interceptors.AttrRunID).AsString())
		require.Equal(t, i > 0, attr(s, interceptors.AttrResumed).AsBool())
		if i > 0 {
			require.Greater(t, attr(s, interceptors.AttrLoad).AsInt64(), attr(segs[i-1], interceptors.AttrLoad).AsInt64())
		}
		if i < len(segs)-1 {
			require.Equal(t, interceptors.OutcomeSuspended, attr(s, interceptors.AttrOutcome).AsString())
		}
	}
	require.Equal(t, interceptors.OutcomeCompleted, attr(last, interceptors.AttrOutcome).AsString())

	// Activities: a span per attempt, under the segment that scheduled them;
	// the replayed "one" is not traced again.
	// The activities' own spans ("inner <input>") find their activity span
	// in the context.
	require.Len(t, all.named("activity tr.step"), 3)
	one := findParent(t, all, all.one(t, "inner one"))
	require.Equal(t, "activity tr.step", one.Name)
	requireChild(t, one, first)
	two := findParent(t, all, all.one(t, "inner two"))
	require.Equal(t, "activity tr.step", two.Name)
	requireChild(t, two, second)
	flakies := all.named("activity tr.flaky")
	require.Len(t, flakies, 2, "one span per attempt")
	slices.SortFunc(flakies, func(a, b tracetest.SpanStub) int {
		return int(attr(a, interceptors.AttrAttempt).AsInt64() - attr(b, interceptors.AttrAttempt).AsInt64())
	})
	require.Equal(t, codes.Error, flakies[0].Status.Code)
	require.Equal(t, interceptors.OutcomeFailed, attr(flakies[0], interceptors.AttrOutcome).AsString())
	require.Equal(t, codes.Unset, flakies[1].Status.Code)
	for _, f := range flakies {
		requireChild(t, f, second)
	}

	// The signal: the client's send, and its receipt under it (the headers
	// carried the send's span), linked to the live segment that received it.
	sent := all.one(t, "signal go")
	requireChild(t, sent, root)
	handledSig := all.one(t, "handle signal go")
	requireChild(t, handledSig, sent)
	require.Len(t, handledSig.Links, 1)
	require.Equal(t, second.SpanContext.SpanID(), handledSig.Links[0].SpanContext.SpanID())
	for _, sp := range []tracetest.SpanStub{sent, handledSig} {
		require.Equal(t, "go", attr(sp, interceptors.AttrSignal).AsString(), sp.Name)
		require.Equal(t, "tr-1", attr(sp, interceptors.AttrWorkflowID).AsString(), sp.Name)
	}
	require.Equal(t, trace.SpanKindProducer, sent.SpanKind)
	require.Equal(t, trace.SpanKindConsumer, handledSig.SpanKind)
	require.Equal(t, run.RunID, attr(handledSig, interceptors.AttrRunID).AsString())

	// The child workflow's segment is a child of the parent's segment; its
	// activity of the child's segment.
	childSeg := all.one(t, "workflow tr.child")
	requireChild(t, childSeg, second)
	requireChild(t, findParent(t, all, all.one(t, "inner child-x")), childSeg)

	// Queries: the client span and the handler span under it.
	queries := all.named("query state")
	require.Len(t, queries, 2)
	handled := all.named("handle query state")
	require.Len(t, handled, 2)
	for _, h := range handled {
		require.Contains(t, []trace.SpanID{queries[0].SpanContext.SpanID(), queries[1].SpanContext.SpanID()}, h.Parent.SpanID())
		require.Equal(t, "state", attr(h, interceptors.AttrQuery).AsString())
		require.Equal(t, "tr-1", attr(h, interceptors.AttrWorkflowID).AsString())
		require.Equal(t, run.RunID, attr(h, interceptors.AttrRunID).AsString())
	}
	for _, q := range queries {
		require.Equal(t, trace.SpanKindClient, q.SpanKind)
		require.Equal(t, "state", attr(q, interceptors.AttrQuery).AsString())
		require.Equal(t, "tr-1", attr(q, interceptors.AttrWorkflowID).AsString())
	}
}

// findParent returns the span that is sp's parent.
func findParent(t *testing.T, all spans, sp tracetest.SpanStub) tracetest.SpanStub {
	t.Helper()
	for _, p := range all {
		if p.SpanContext.SpanID() == sp.Parent.SpanID() {
			return p
		}
	}
	t.Fatalf("no parent for span %s", sp.Name)
	return tracetest.SpanStub{}
}

func TestTracingWithoutCallerSpan(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	fail := engine.NewActivity("tr.fail", func(ctx context.Context, in string) (string, error) {
		return "", engine.NewNonRetryableError("Nope", "refused", nil)
	})
	fails := engine.NewWorkflow("tr.fails", func(ctx engine.Context, in string) (string, error) { return fail.Run(ctx, in) })
	step := engine.NewActivity("tr.rstep", func(ctx context.Context, in string) (string, error) { return in, nil })
	resumed := resumeWorkflow("tr.resumed", step)
	e := newEngine(t, []engine.Interceptor{interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: tp})},
		fail, fails, step, resumed)
	run, err := fails.Start(ctx, e.Client(), "x", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.Error(t, err)
	runResume(t, ctx, e, resumed, "tr-resumed")

	all := spans(exp.GetSpans())
	start := all.one(t, "start tr.fails")
	require.False(t, start.Parent.IsValid(), "without a caller span the start span is the root")
	seg := all.one(t, "workflow tr.fails")
	requireChild(t, seg, start)
	require.Equal(t, codes.Error, seg.Status.Code)
	require.Equal(t, interceptors.OutcomeFailed, attr(seg, interceptors.AttrOutcome).AsString())
	act := all.one(t, "activity tr.fail")
	requireChild(t, act, seg)
	require.Equal(t, codes.Error, act.Status.Code)

	// A run resumed by replay stays one trace: its segments hang from its start.
	root := all.one(t, "start tr.resumed")
	segs := all.named("workflow tr.resumed")
	require.Len(t, segs, 2)
	for _, s := range segs {
		requireChild(t, s, root)
	}
	for _, a := range all.named("activity tr.rstep") {
		require.Equal(t, root.SpanContext.TraceID(), a.SpanContext.TraceID())
	}
}
