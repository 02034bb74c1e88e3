package interceptors

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
)

// Attribute keys. Span names carry the workflow or activity type ("workflow
// <type>", "activity <type>"), so spans repeat neither type as an attribute;
// metrics carry them as AttrWorkflowType and AttrActivityType.
const (
	AttrWorkflowID   = "graft.workflow.id"
	AttrRunID        = "graft.workflow.run_id"
	AttrWorkflowType = "graft.workflow.type"
	AttrQueue        = "graft.queue"
	// AttrLoad is WorkflowInfo.Loads: how many times a worker has loaded the run.
	AttrLoad         = "graft.workflow.load"
	AttrActivityType = "graft.activity.type"
	AttrActivityID   = "graft.activity.id"
	AttrAttempt      = "graft.activity.attempt"
	AttrSignal       = "graft.signal"
	AttrQuery        = "graft.query"
	// AttrResumed is set (true) on a workflow span whose segment began by
	// replaying the run's record: the run was resumed, not started.
	AttrResumed = "graft.resumed"
	// AttrOutcome is how a workflow segment or an activity attempt ended:
	// completed, failed, canceled, continued (continue-as-new), snoozed (an
	// activity asked to run again later, see engine.SnoozeError) or, for a
	// workflow segment that ended by unloading, suspended. Activity spans
	// carry it only when the attempt did not complete.
	AttrOutcome = "graft.outcome"
)

// Outcomes (values of AttrOutcome).
const (
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
	OutcomeCanceled  = "canceled"
	OutcomeContinued = "continued"
	OutcomeSnoozed   = "snoozed"
	OutcomeSuspended = "suspended"
)

// TracingConfig configures NewTracing.
type TracingConfig struct {
	// TracerProvider creates the tracer. Default: the otel global provider.
	TracerProvider trace.TracerProvider
	// Propagator writes the span context into engine.Headers and reads it
	// back. Default: W3C Trace Context (propagation.TraceContext).
	Propagator propagation.TextMapPropagator
}

// Tracing creates OpenTelemetry spans: one per start ("start <type>") and
// per other client call made within a trace ("signal <name>", "query
// <name>", "cancel", "reset"), one per workflow execution segment ("workflow <type>", see the
// package documentation), one per activity attempt ("activity <name>"), one
// per signal a workflow receives ("handle signal <name>") and one per query
// answered within a trace ("handle query <name>").
//
// Parents travel in the headers: the start span's context goes into the
// run's headers, the segment span's into each activity's and child's, so
// the tree is caller -> start -> workflow segment -> activity attempt, child
// segment -> ..., across processes; a start made outside any trace is the
// root. A signal's headers carry its "signal" span, so "handle signal" is
// that span's child (and links to the receiving segment); a signal sent
// outside any trace has no span and its "handle signal" is the segment's
// child. Replayed steps create no spans.
type Tracing struct {
	engine.InterceptorBase
	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	// Span names of starts, workflow segments and activities, by type, and
	// of signals and queries, sent and handled, by name.
	startNames, workflowNames, activityNames                     spanNames
	signalNames, queryNames, handleSignalNames, handleQueryNames spanNames
}

// NewTracing returns a tracing interceptor.
func NewTracing(cfg TracingConfig) *Tracing {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return &Tracing{tracer: tp.Tracer("github.com/graftdev/graft/interceptors"), prop: prop,
		startNames: spanNames{prefix: "start "}, workflowNames: spanNames{prefix: "workflow "},
		activityNames: spanNames{prefix: "activity "}, signalNames: spanNames{prefix: "signal "},
		queryNames: spanNames{prefix: "query "}, handleSignalNames: spanNames{prefix: "handle signal "},
		handleQueryNames: spanNames{prefix: "handle query "}}
}

// spanNames caches the names of spans of one kind (prefix) by workflow or
// activity type, signal or query name, so a span start does not build its
// name. Types are registered names, few, and so are the names of signals
// and queries a workflow handles; past maxSpanNames the rest are built
// each time.
type spanNames struct {
	prefix string
	m      sync.Map // type -> name
	n      atomic.Int32
}

const maxSpanNames = 4096

func (c *spanNames) get(typ string) string {
	if v, ok := c.m.Load(typ); ok {
		return v.(string)
	}
	name := c.prefix + typ
	if c.n.Load() < maxSpanNames {
		if _, loaded := c.m.LoadOrStore(typ, name); !loaded {
			c.n.Add(1)
		}
	}
	return name
}

// Span start options and attribute lists that do not depend on the call,
// made once: passing them on allocates nothing.
var (
	consumerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	producerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	clientSpan   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	outcomeAttrs = func() map[string][]attribute.KeyValue {
		m := map[string][]attribute.KeyValue{}
		for _, o := range []string{OutcomeCompleted, OutcomeFailed, OutcomeCanceled, OutcomeContinued, OutcomeSnoozed, OutcomeSuspended} {
			m[o] = []attribute.KeyValue{attribute.String(AttrOutcome, o)}
		}
		return m
	}()
)

// ClientCall starts a span for the call, a child of the caller's, and for a
// start writes its context into the run's headers so the workflow's spans
// are its children. A start always has a span, even outside any trace: it
// is the root that every segment of the run (and of its children and the
// runs that continue it) hangs from, so the run is one trace however often
// it is resumed. Other calls made outside any trace have no span.
func (t *Tracing) ClientCall(ctx context.Context, in *engine.ClientCallInput,
	next engine.ClientNext) (any, error) {
	if in.Kind != engine.ClientStart && !trace.SpanContextFromContext(ctx).IsValid() {
		return next(ctx, in)
	}
	ctx, span := t.startClientSpan(ctx, in)
	out, err := next(ctx, in)
	endSpan(span, err)
	return out, err
}

// startClientSpan starts a client call's span and, for a start or a
// signal, writes its context into the call's headers. It is apart from
// ClientCall so that the call runs below a small frame.
//
//go:noinline
func (t *Tracing) startClientSpan(ctx context.Context, in *engine.ClientCallInput) (context.Context, trace.Span) {
	name, opts := string(in.Kind), clientSpan
	attrs := attrPool.Get().(*[]attribute.KeyValue)
	*attrs = append((*attrs)[:0], attribute.String(AttrWorkflowID, in.WorkflowID))
	switch in.Kind {
	case engine.ClientStart:
		name, opts = t.startNames.get(in.WorkflowType), producerSpan
		*attrs = append(*attrs, attribute.String(AttrWorkflowType, in.WorkflowType))
	case engine.ClientSignal:
		name, opts = t.signalNames.get(in.Name), producerSpan
		*attrs = append(*attrs, attribute.String(AttrSignal, in.Name))
	case engine.ClientQuery:
		name = t.queryNames.get(in.Name)
		*attrs = append(*attrs, attribute.String(AttrQuery, in.Name))
	}
	ctx, span := t.tracer.Start(ctx, name, opts...)
	setAttrs(span, attrs)
	if in.Kind == engine.ClientStart || in.Kind == engine.ClientSignal {
		if in.Headers == nil {
			in.Headers = engine.Headers{}
		}
		t.prop.Inject(ctx, HeaderCarrier(in.Headers))
	}
	return ctx, span
}

// attrPool recycles the attribute lists of spans: the span copies them, so
// a list is free again once SetAttributes returns.
//
// Every span gets its attributes once, set on the started span, none as a
// start option (trace.WithAttributes): an option's attributes are copied
// into the start's configuration, then again into the span, and the
// option, its list and the options' list are each allocated (with the
// SDK, a start span with its two attributes as an option cost four
// allocations more and about a quarter more CPU). A sampler therefore sees
// no graft attribute at the start; it sees the span's name, which holds
// the workflow or activity type, the signal or the query, and its kind.
var attrPool = sync.Pool{New: func() any { return new([]attribute.KeyValue) }}

// setAttrs sets the pooled attribute list attrs on span and returns the
// list to the pool.
func setAttrs(span trace.Span, attrs *[]attribute.KeyValue) {
	span.SetAttributes(*attrs...)
	attrPool.Put(attrs)
}

// outcomeAttr is the attribute list of an outcome.
func outcomeAttr(outcome string) []attribute.KeyValue {
	if kv, ok := outcomeAttrs[outcome]; ok {
		return kv
	}
	return []attribute.KeyValue{attribute.String(AttrOutcome, outcome)}
}

// segmentKey keys the current segment's span state in the workflow context.
type segmentKey struct{}

// segmentOf returns the current segment's span state, or nil.
func segmentOf(ctx engine.Context) *segment {
	seg, _ := ctx.Value(segmentKey{}).(*segment)
	return seg
}

// segment is the span state of one workflow execution segment. It is only
// touched from the workflow's goroutine.
type segment struct {
	t       *Tracing
	in      *engine.ExecuteWorkflowInput
	begin   time.Time // of a resumed segment; zero for one that began live
	span    trace.Span
	spanCtx context.Context
	resumed bool
	// headers is what the propagator writes for spanCtx, made once for the
	// segment's activity and child calls; headerRoom holds it unless the
	// propagator writes more than traceparent and tracestate.
	headers    headerList
	headerRoom [4]string
	// traceID and spanID are the span's IDs as Logging writes them, made
	// once for the segment's records.
	traceID, spanID string
}

// live starts the segment's span the first time the segment does live work.
// A resumed segment's span starts at the load, so it covers the replay too.
func (s *segment) live() {
	if s.span != nil {
		return
	}
	parent := s.t.prop.Extract(context.Background(), HeaderCarrier(s.in.Headers))
	opts := consumerSpan
	if s.resumed = s.in.Replaying; s.resumed {
		opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(s.begin)}
	}
	s.spanCtx, s.span = s.t.tracer.Start(parent, s.t.workflowNames.get(s.in.Info.WorkflowType), opts...)
}

// propagate writes the segment span's context into h.
func (s *segment) propagate(h engine.Headers) {
	if s.headers == nil {
		s.headers = s.headerRoom[:0]
		s.t.prop.Inject(s.spanCtx, &s.headers)
	}
	for i := 0; i < len(s.headers); i += 2 {
		h[s.headers[i]] = s.headers[i+1]
	}
}

// headerList is a carrier that keeps what a propagator writes, as keys and
// values in turn, in order; written into a map in that order it leaves what
// the propagator would have left there.
type headerList []string

// Get returns the value last set under key, or "".
func (l *headerList) Get(key string) string {
	v := ""
	for i := 0; i < len(*l); i += 2 {
		if (*l)[i] == key {
			v = (*l)[i+1]
		}
	}
	return v
}

// Set adds key and value.
func (l *headerList) Set(key, value string) { *l = append(*l, key, value) }

// Keys lists the keys set, each once.
func (l *headerList) Keys() []string {
	var keys []string
	for i := 0; i < len(*l); i += 2 {
		if !slices.Contains(keys, (*l)[i]) {
			keys = append(keys, (*l)[i])
		}
	}
	return keys
}

// ids returns the span's trace and span IDs, or "" when it has none, as
// TraceID.String and SpanID.String write them; both are cut from one string.
func (s *segment) ids() (traceID, spanID string) {
	if s.traceID == "" {
		if sc := s.span.SpanContext(); sc.IsValid() {
			tid, sid := sc.TraceID(), sc.SpanID()
			var b [2*len(tid) + 2*len(sid)]byte
			hex.Encode(b[:2*len(tid)], tid[:])
			hex.Encode(b[2*len(tid):], sid[:])
			ids := string(b[:])
			s.traceID, s.spanID = ids[:2*len(tid)], ids[2*len(tid):]
		}
	}
	return s.traceID, s.spanID
}

// end sets the span's attributes, all at once (the span is the segment's
// own: no other code sees it before it ends), and ends it.
func (s *segment) end(outcome string, err error) {
	if s.span == nil {
		return
	}
	info := s.in.Info
	attrs := attrPool.Get().(*[]attribute.KeyValue)
	*attrs = append((*attrs)[:0],
		attribute.String(AttrWorkflowID, info.WorkflowID),
		attribute.String(AttrRunID, info.RunID),
		attribute.String(AttrQueue, info.Queue),
		attribute.Int(AttrLoad, info.Loads))
	if s.resumed {
		*attrs = append(*attrs, attribute.Bool(AttrResumed, true))
	}
	*attrs = append(*attrs, attribute.String(AttrOutcome, outcome))
	setAttrs(s.span, attrs)
	if outcome == OutcomeFailed || outcome == OutcomeCanceled {
		s.span.RecordError(err)
		s.span.SetStatus(codes.Error, err.Error())
	}
	s.span.End()
}

// ExecuteWorkflow traces the execution segment. A segment that only replays
// (a query, or a resume that unloads again before doing anything) has no span.
func (t *Tracing) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	seg := t.beginSegment(in)
	returned := false
	defer seg.endUnlessReturned(&returned)
	ctx = engine.WithValue(ctx, segmentKey{}, seg)
	out, err := next(ctx, in)
	returned = true
	live := !engine.IsReplaying(ctx)
	seg.returned(live, workflowOutcome(err), err)
	return out, err
}

// beginSegment returns the span state of the segment in begins; the span
// starts now unless the segment begins by replaying.
func (t *Tracing) beginSegment(in *engine.ExecuteWorkflowInput) *segment {
	seg := &segment{t: t, in: in}
	if in.Replaying {
		seg.begin = time.Now()
	} else {
		seg.live()
	}
	return seg
}

// endUnlessReturned, deferred around the workflow function, ends the
// segment as suspended when the function did not return: it was unloaded
// (runtime.Goexit) or a panic is unwinding.
func (s *segment) endUnlessReturned(returned *bool) {
	if !*returned {
		s.end(OutcomeSuspended, nil)
	}
}

// returned ends the segment whose workflow function returned, live or
// (a query's replay, or a run unloaded at its end) not.
func (s *segment) returned(live bool, outcome string, err error) {
	if live {
		s.live()
	}
	s.end(outcome, err)
}

// WorkflowOutbound writes the segment span's context into the headers of a
// live activity or child call, so their spans are the segment's children.
func (t *Tracing) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput,
	next engine.OutboundNext) error {
	if !in.Replaying && (in.Kind == engine.OutboundActivity || in.Kind == engine.OutboundChild) {
		if seg := segmentOf(ctx); seg != nil {
			seg.live()
			if in.Headers == nil {
				in.Headers = engine.Headers{}
			}
			seg.propagate(in.Headers)
		}
	}
	return next(ctx, in)
}

// HandleSignal traces a signal the workflow receives live, as a child of
// the sender's "signal" span when the signal carries one in its headers
// (linked to the receiving segment), else of the receiving segment.
func (t *Tracing) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) error {
	seg := segmentOf(ctx)
	if in.Replaying || seg == nil {
		return next(ctx, in)
	}
	span := t.startSignal(seg, in)
	err := next(ctx, in)
	endSpan(span, err)
	return err
}

// startSignal starts the span of a signal seg receives live.
func (t *Tracing) startSignal(seg *segment, in *engine.HandleSignalInput) trace.Span {
	seg.live()
	parent, opts := seg.spanCtx, consumerSpan
	if len(in.Headers) > 0 {
		if sender := t.prop.Extract(context.Background(), HeaderCarrier(in.Headers)); trace.SpanContextFromContext(sender).IsValid() {
			parent = sender
			opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithLinks(trace.Link{SpanContext: seg.span.SpanContext()})}
		}
	}
	_, span := t.tracer.Start(parent, t.handleSignalNames.get(in.Name), opts...)
	setIDAttrs(span, AttrSignal, in.Name, &in.Info)
	return span
}

// setIDAttrs sets a handler span's attributes: its signal or query name
// (under key) and the run's IDs.
func setIDAttrs(span trace.Span, key, name string, info *engine.WorkflowInfo) {
	attrs := attrPool.Get().(*[]attribute.KeyValue)
	*attrs = append((*attrs)[:0], attribute.String(key, name), attribute.String(AttrWorkflowID, info.WorkflowID),
		attribute.String(AttrRunID, info.RunID))
	setAttrs(span, attrs)
}

// HandleQuery traces the query handler as a child of the client's query
// span; a query made outside any trace has neither.
func (t *Tracing) HandleQuery(ctx context.Context, in *engine.HandleQueryInput,
	next engine.QueryNext) (any, error) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return next(ctx, in)
	}
	ctx, span := t.startQuery(ctx, in)
	out, err := next(ctx, in)
	endSpan(span, err)
	return out, err
}

// startQuery starts the span of a query answered within a trace.
func (t *Tracing) startQuery(ctx context.Context, in *engine.HandleQueryInput) (context.Context, trace.Span) {
	ctx, span := t.tracer.Start(ctx, t.handleQueryNames.get(in.Name))
	setIDAttrs(span, AttrQuery, in.Name, &in.Info)
	return ctx, span
}

// ExecuteActivity traces one activity attempt as a child of the workflow
// segment that scheduled it. The activity's context carries the span. Like
// Logging's, this frame stays small while next runs: the span is started
// and ended in functions of their own.
func (t *Tracing) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	ctx, span := t.startActivity(ctx, in)
	out, err := next(ctx, in)
	endActivity(span, activityOutcome(err), err)
	return out, err
}

// startActivity starts an attempt's span. Its frame stays small too, as
// the SDK's span start runs below it: the attributes are made apart.
//
//go:noinline
func (t *Tracing) startActivity(ctx context.Context, in *engine.ActivityInput) (context.Context, trace.Span) {
	parent := t.prop.Extract(ctx, HeaderCarrier(in.Headers))
	ctx, span := t.tracer.Start(parent, t.activityNames.get(in.Info.ActivityName), consumerSpan...)
	setActivityAttrs(span, &in.Info)
	return ctx, span
}

//go:noinline
func setActivityAttrs(span trace.Span, info *engine.ActivityInfo) {
	attrs := attrPool.Get().(*[]attribute.KeyValue)
	*attrs = append((*attrs)[:0],
		attribute.String(AttrActivityID, info.ActivityID),
		attribute.Int(AttrAttempt, info.Attempt),
		attribute.String(AttrWorkflowID, info.Workflow.WorkflowID),
		attribute.String(AttrRunID, info.Workflow.RunID))
	setAttrs(span, attrs)
}

//go:noinline
func endActivity(span trace.Span, outcome string, err error) {
	switch outcome {
	case OutcomeCompleted:
		span.End()
	case OutcomeSnoozed: // not a failure: the attempt is made again later
		span.SetAttributes(outcomeAttr(outcome)...)
		span.End()
	default:
		span.SetAttributes(outcomeAttr(outcome)...)
		endSpan(span, err)
	}
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// workflowOutcome names how a workflow function returned.
func workflowOutcome(err error) string {
	if err == nil {
		return OutcomeCompleted // before the error targets, which escape
	}
	var ca *engine.CanceledError
	switch {
	case engine.IsContinueAsNew(err):
		return OutcomeContinued
	case errors.As(err, &ca):
		return OutcomeCanceled
	}
	return OutcomeFailed
}

// activityOutcome names how an activity attempt returned.
func activityOutcome(err error) string {
	if err == nil {
		return OutcomeCompleted
	}
	var (
		ca *engine.CanceledError
		sn *engine.SnoozeError
	)
	switch {
	case errors.As(err, &sn):
		return OutcomeSnoozed
	case errors.As(err, &ca), errors.Is(err, context.Canceled):
		return OutcomeCanceled
	}
	return OutcomeFailed
}
