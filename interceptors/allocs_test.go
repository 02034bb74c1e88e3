package interceptors

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
)

// The tests here pin what the interceptors allocate per workflow and per
// activity beyond what OpenTelemetry's SDK and log/slog allocate for the
// same spans and records: span names, start options, attribute lists, the
// trace context written into each activity's headers and the trace and
// span IDs of the workflow's records are made once, not per call. Each
// compares with the SDK calls a span needs at least, made directly, so an
// SDK upgrade moves both sides.

func skipUnderRace(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector: allocation counts vary")
	}
}

func allocsTracer(t *testing.T) trace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

const parentHeader = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"

// TestActivityAllocatesOnlyTheSpan runs an activity attempt through the
// whole chain (tracing, metrics, logging at Info, recovery): it allocates
// what the SDK does to extract the parent and start, attribute and end the
// span, and nothing else (before: three more, the span's name and its start
// options).
func TestActivityAllocatesOnlyTheSpan(t *testing.T) {
	skipUnderRace(t)
	tp := allocsTracer(t)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	list, err := All(Config{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), TracerProvider: tp, MeterProvider: mp})
	require.NoError(t, err)
	call := func(context.Context, *engine.ActivityInput) (any, error) { return nil, nil }
	for i := len(list) - 1; i >= 0; i-- {
		ic, next := list[i].(engine.ActivityInterceptor), call
		call = func(ctx context.Context, in *engine.ActivityInput) (any, error) {
			return ic.ExecuteActivity(ctx, in, next)
		}
	}
	in := &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "allocs.noop", ActivityID: "1", Attempt: 1,
		Workflow: engine.WorkflowInfo{WorkflowID: "wf", RunID: "run", WorkflowType: "allocs.wf"}},
		Headers: engine.Headers{"traceparent": parentHeader}}
	ctx := context.Background()
	chain := testing.AllocsPerRun(200, func() { _, _ = call(ctx, in) })

	tracer, prop := tp.Tracer("sdk"), propagation.TraceContext{}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	kvs := []attribute.KeyValue{attribute.String(AttrActivityID, "1"), attribute.Int(AttrAttempt, 1),
		attribute.String(AttrWorkflowID, "wf"), attribute.String(AttrRunID, "run")}
	sdk := testing.AllocsPerRun(200, func() {
		_, span := tracer.Start(prop.Extract(ctx, HeaderCarrier(in.Headers)), "activity allocs.noop", opts...)
		span.SetAttributes(kvs...)
		span.End()
	})
	t.Logf("allocations: chain %v, SDK %v", chain, sdk)
	require.LessOrEqual(t, chain, sdk, "an activity attempt through All allocates more than its span in the SDK")
}

// TestStartAllocatesOnlyTheSpan pins a start's span work: starting the
// span, attributing it and writing its context into the run's headers
// allocate what the SDK does to start, attribute (once) and end the span
// and to write its context (before: its kind and its attributes passed as
// start options, four allocations more).
func TestStartAllocatesOnlyTheSpan(t *testing.T) {
	skipUnderRace(t)
	tp := allocsTracer(t)
	tr := NewTracing(TracingConfig{TracerProvider: tp})
	next := func(context.Context, *engine.ClientCallInput) (any, error) { return nil, nil }
	ctx := context.Background()
	in := &engine.ClientCallInput{Kind: engine.ClientStart, WorkflowID: "wf", WorkflowType: "allocs.wf", Headers: engine.Headers{}}
	ours := testing.AllocsPerRun(200, func() { _, _ = tr.ClientCall(ctx, in, next) })
	require.Len(t, in.Headers["traceparent"], len(parentHeader))

	tracer, prop := tp.Tracer("sdk"), propagation.TraceContext{}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	kvs := []attribute.KeyValue{attribute.String(AttrWorkflowID, "wf"), attribute.String(AttrWorkflowType, "allocs.wf")}
	h := engine.Headers{}
	sdk := testing.AllocsPerRun(200, func() {
		spanCtx, span := tracer.Start(ctx, "start allocs.wf", opts...)
		span.SetAttributes(kvs...)
		prop.Inject(spanCtx, HeaderCarrier(h))
		span.End()
	})
	t.Logf("allocations: start %v, SDK %v", ours, sdk)
	require.LessOrEqual(t, ours, sdk, "a start's span work allocates more than the SDK's")
}

// TestWorkflowSegmentAllocatesOnlyTheSpan pins a live segment's span work:
// starting it, writing its context into three activities' headers,
// giving its IDs to two log records and ending it allocate two less than
// what the SDK does to start, attribute (once) and end the span, to write
// its context once and to give its trace and span IDs as strings once: the
// list the context is written to is room in the segment, and the two IDs
// are cut from one string (before: the name, the start options, the
// outcome's attribute list and the growth of the span's for it, a
// traceparent per activity and the two IDs per record).
func TestWorkflowSegmentAllocatesOnlyTheSpan(t *testing.T) {
	skipUnderRace(t)
	tp := allocsTracer(t)
	tr := NewTracing(TracingConfig{TracerProvider: tp})
	in := &engine.ExecuteWorkflowInput{Info: engine.WorkflowInfo{WorkflowID: "wf", RunID: "run", WorkflowType: "allocs.wf",
		Queue: "default", Loads: 1}, Headers: engine.Headers{"traceparent": parentHeader}}
	h := engine.Headers{}
	var seg *segment
	ours := testing.AllocsPerRun(200, func() {
		seg = &segment{t: tr, in: in}
		seg.live()
		for range 3 {
			seg.propagate(h)
		}
		for range 2 {
			seg.ids()
		}
		seg.end(OutcomeCompleted, nil)
	})
	sc := seg.span.SpanContext()
	require.Equal(t, sc.SpanID().String(), h["traceparent"][36:52])
	traceID, spanID := seg.ids()
	require.Equal(t, sc.TraceID().String(), traceID)
	require.Equal(t, sc.SpanID().String(), spanID)

	tracer, prop := tp.Tracer("sdk"), propagation.TraceContext{}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	kvs := []attribute.KeyValue{attribute.String(AttrWorkflowID, "wf"), attribute.String(AttrRunID, "run"),
		attribute.String(AttrQueue, "default"), attribute.Int(AttrLoad, 1), attribute.String(AttrOutcome, OutcomeCompleted)}
	sdk := testing.AllocsPerRun(200, func() {
		seg = &segment{}
		ctx, span := tracer.Start(prop.Extract(context.Background(), HeaderCarrier(in.Headers)), "workflow allocs.wf", opts...)
		prop.Inject(ctx, &seg.headers)
		sc := span.SpanContext()
		seg.traceID, seg.spanID = sc.TraceID().String(), sc.SpanID().String()
		span.SetAttributes(kvs...)
		span.End()
	})
	t.Logf("allocations: segment %v, SDK %v", ours, sdk)
	require.LessOrEqual(t, ours, sdk-2, "a workflow segment's span work allocates more than the SDK's, less the list and an ID")
}

// discardHandler takes every record and keeps none.
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (h discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h discardHandler) WithGroup(string) slog.Handler           { return h }

// TestLoggingRecordsAllocateOnlyInSlog pins what Logging allocates for a
// workflow's record: the attributes are built on the stack, so only the
// record's room for those past its first five (slog's) is allocated
// (before: the attribute list, the list of the end's extra attributes and
// the trace and span IDs of each record). A record of a disabled level
// allocates nothing.
func TestLoggingRecordsAllocateOnlyInSlog(t *testing.T) {
	skipUnderRace(t)
	l := NewLogging(LoggingConfig{Logger: slog.New(discardHandler{})})
	seg := &segment{t: NewTracing(TracingConfig{TracerProvider: allocsTracer(t)}),
		in: &engine.ExecuteWorkflowInput{Info: engine.WorkflowInfo{WorkflowID: "wf", RunID: "run", WorkflowType: "allocs.wf"}}}
	seg.live()
	info := seg.in.Info
	bg := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		var buf recordAttrs
		attrs := append(l.workflowAttrs(buf[:0], seg, info, nil), slog.Duration("duration", time.Second))
		l.emit(bg, slog.LevelInfo, "workflow completed", attrs)
	})
	require.LessOrEqual(t, allocs, 1.0, "a workflow record allocates more than slog's room for its attributes")

	quiet := NewLogging(LoggingConfig{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}) // Info and above
	next := func(context.Context, *engine.ActivityInput) (any, error) { return nil, nil }
	in := &engine.ActivityInput{Info: engine.ActivityInfo{ActivityName: "allocs.noop", ActivityID: "1", Attempt: 1}}
	allocs = testing.AllocsPerRun(200, func() { _, _ = quiet.ExecuteActivity(bg, in, next) })
	require.Zero(t, allocs, "an activity whose records are below the logger's level allocates")
}
