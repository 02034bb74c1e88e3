package interceptors

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
)

// LoggingConfig configures NewLogging.
type LoggingConfig struct {
	// Logger receives the records. Default slog.Default().
	Logger *slog.Logger
	// Headers names run headers copied into every record as attributes
	// "header.<name>" (a customer ID, a tenant). Default none.
	Headers []string
}

// Logging writes one structured record per workflow start and end, signal
// received, query answered and activity attempt, each with the workflow's
// identity (workflow_id, run_id, workflow_type) and, for activities, the
// activity's (activity, activity_id, attempt). Records carry trace_id and
// span_id when a span is active (Tracing placed outside Logging).
//
// Levels: workflow starts and ends and signals at Info; activity attempts
// that complete, activity starts, snoozes and queries at Debug (the
// workflow's own records say it progressed; a line per successful attempt
// is noise at millions of runs a month); failed activity attempts and
// cancellations at Warn; failed workflows at Error.
//
// It is silent on replay: a resumed run does not log its start, its replayed
// signals or anything else again, and a query's replay logs nothing.
type Logging struct {
	engine.InterceptorBase
	// h is the logger's handler: records go to it directly, which spares
	// slog.Logger's capture of the caller's program counter (a source
	// position would name this file, not the workflow's).
	h       slog.Handler
	headers []string
	// headerKeys are the attribute keys of headers ("header.<name>").
	headerKeys []string
	clock      stopwatch
}

// recordAttrs is room for the attributes of most records, on the caller's
// stack: identity, trace and span IDs, duration, error and stack.
type recordAttrs [12]slog.Attr

// NewLogging returns a logging interceptor.
func NewLogging(cfg LoggingConfig) *Logging {
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	keys := make([]string, len(cfg.Headers))
	for i, k := range cfg.Headers {
		keys[i] = "header." + k
	}
	return &Logging{h: l.Handler(), headers: cfg.Headers, headerKeys: keys, clock: newStopwatch()}
}

func (l *Logging) enabled(ctx context.Context, level slog.Level) bool { return l.h.Enabled(ctx, level) }

func (l *Logging) emit(ctx context.Context, level slog.Level, msg string, attrs []slog.Attr) {
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	_ = l.h.Handle(ctx, r)
}

// workflowAttrs appends a workflow record's attributes to attrs; seg is the
// segment's span state (nil without Tracing).
func (l *Logging) workflowAttrs(attrs []slog.Attr, seg *segment, info engine.WorkflowInfo, h engine.Headers) []slog.Attr {
	attrs = append(attrs,
		slog.String("workflow_id", info.WorkflowID),
		slog.String("run_id", info.RunID),
		slog.String("workflow_type", info.WorkflowType),
		slog.String("queue", info.Queue),
		slog.Int("load", info.Loads))
	attrs = l.headerAttrs(attrs, h)
	if seg != nil && seg.span != nil {
		if traceID, spanID := seg.ids(); traceID != "" {
			attrs = append(attrs, slog.String("trace_id", traceID), slog.String("span_id", spanID))
		}
	}
	return attrs
}

func (l *Logging) headerAttrs(attrs []slog.Attr, h engine.Headers) []slog.Attr {
	for i, k := range l.headers {
		if v, ok := h[k]; ok {
			attrs = append(attrs, slog.String(l.headerKeys[i], v))
		}
	}
	return attrs
}

func traceAttrs(attrs []slog.Attr, sc trace.SpanContext) []slog.Attr {
	if !sc.IsValid() {
		return attrs
	}
	return append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
}

// The methods around next keep small frames. A workflow's activities run
// on its goroutine inside them, with the engine's commit path below, so
// what they hold on the stack while next runs decides whether that
// goroutine outgrows its first stack and has it copied (microseconds per
// run). Records are built in the functions they call before and after
// next, marked noinline so their attribute arrays stay out of these frames.

// ExecuteWorkflow logs a live start and a live end.
func (l *Logging) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	if !in.Replaying {
		l.workflowStarted(segmentOf(ctx), in)
	}
	out, err := next(ctx, in)
	if !engine.IsReplaying(ctx) {
		l.workflowEnded(segmentOf(ctx), in, workflowOutcome(err), err)
	}
	return out, err
}

// workflowStarted logs a live start; seg is the segment's span state (nil
// without Tracing).
//
//go:noinline
func (l *Logging) workflowStarted(seg *segment, in *engine.ExecuteWorkflowInput) {
	if bg := context.Background(); l.enabled(bg, slog.LevelInfo) {
		var buf recordAttrs
		l.emit(bg, slog.LevelInfo, "workflow started", l.workflowAttrs(buf[:0], seg, in.Info, in.Headers))
	}
}

//go:noinline
func (l *Logging) workflowEnded(seg *segment, in *engine.ExecuteWorkflowInput, outcome string, err error) {
	level, msg := slog.LevelInfo, "workflow completed"
	switch outcome {
	case OutcomeContinued:
		msg = "workflow continued as new"
	case OutcomeCanceled:
		level, msg = slog.LevelWarn, "workflow canceled"
	case OutcomeFailed:
		level, msg = slog.LevelError, "workflow failed"
	}
	bg := context.Background()
	if !l.enabled(bg, level) {
		return
	}
	var buf recordAttrs
	attrs := l.workflowAttrs(buf[:0], seg, in.Info, in.Headers)
	if !in.Info.StartTime.IsZero() {
		attrs = append(attrs, slog.Duration("duration", time.Since(in.Info.StartTime)))
	}
	if err != nil && msg != "workflow continued as new" {
		attrs = errAttrs(attrs, err)
	}
	l.emit(bg, level, msg, attrs)
}

// HandleSignal logs a signal the workflow receives live.
func (l *Logging) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) error {
	err := next(ctx, in)
	if !in.Replaying {
		l.signalHandled(ctx, in, err)
	}
	return err
}

//go:noinline
func (l *Logging) signalHandled(ctx engine.Context, in *engine.HandleSignalInput, err error) {
	level, msg := slog.LevelInfo, "signal received"
	if err != nil {
		level, msg = slog.LevelWarn, "signal refused"
	}
	bg := context.Background()
	if !l.enabled(bg, level) {
		return
	}
	var h engine.Headers
	if len(l.headers) > 0 {
		h = engine.WorkflowHeadersOf(ctx)
	}
	var buf recordAttrs
	attrs := append(l.workflowAttrs(buf[:0], segmentOf(ctx), in.Info, h), slog.String("signal", in.Name))
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	l.emit(bg, level, msg, attrs)
}

// HandleQuery logs a query answered (Debug) or failed (Warn).
func (l *Logging) HandleQuery(ctx context.Context, in *engine.HandleQueryInput,
	next engine.QueryNext) (any, error) {
	start := time.Now()
	out, err := next(ctx, in)
	l.queryAnswered(ctx, in, start, err)
	return out, err
}

// queryAnswered logs a query that began at start.
func (l *Logging) queryAnswered(ctx context.Context, in *engine.HandleQueryInput, start time.Time, err error) {
	level, msg := slog.LevelDebug, "query answered"
	if err != nil {
		level, msg = slog.LevelWarn, "query failed"
	}
	if l.enabled(ctx, level) {
		attrs := []slog.Attr{
			slog.String("workflow_id", in.Info.WorkflowID), slog.String("run_id", in.Info.RunID),
			slog.String("workflow_type", in.Info.WorkflowType), slog.String("query", in.Name),
			slog.Duration("duration", time.Since(start)),
		}
		if err != nil {
			attrs = append(attrs, slog.Any("err", err))
		}
		l.emit(ctx, level, msg, traceAttrs(attrs, trace.SpanContextFromContext(ctx)))
	}
}

// activityAttrs appends an activity record's attributes to attrs.
func (l *Logging) activityAttrs(attrs []slog.Attr, ctx context.Context, in *engine.ActivityInput) []slog.Attr {
	info := in.Info
	attrs = append(attrs,
		slog.String("workflow_id", info.Workflow.WorkflowID),
		slog.String("run_id", info.Workflow.RunID),
		slog.String("workflow_type", info.Workflow.WorkflowType),
		slog.String("activity", info.ActivityName),
		slog.String("activity_id", info.ActivityID),
		slog.Int("attempt", info.Attempt))
	attrs = l.headerAttrs(attrs, in.Headers)
	return traceAttrs(attrs, trace.SpanContextFromContext(ctx))
}

// ExecuteActivity logs each attempt's start (Debug) and end.
func (l *Logging) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	l.activityStarted(ctx, in)
	start := l.clock.now()
	out, err := next(ctx, in)
	l.activityEnded(ctx, in, l.clock.now()-start, activityOutcome(err), err)
	return out, err
}

//go:noinline
func (l *Logging) activityStarted(ctx context.Context, in *engine.ActivityInput) {
	if l.enabled(ctx, slog.LevelDebug) {
		var buf recordAttrs
		l.emit(ctx, slog.LevelDebug, "activity started", l.activityAttrs(buf[:0], ctx, in))
	}
}

//go:noinline
func (l *Logging) activityEnded(ctx context.Context, in *engine.ActivityInput, d time.Duration, outcome string, err error) {
	level, msg := slog.LevelDebug, "activity completed"
	switch outcome {
	case OutcomeSnoozed:
		level, msg = slog.LevelDebug, "activity snoozed"
	case OutcomeCanceled:
		level, msg = slog.LevelWarn, "activity canceled"
	case OutcomeFailed:
		level, msg = slog.LevelWarn, "activity failed"
	}
	if !l.enabled(ctx, level) {
		return
	}
	var buf recordAttrs
	attrs := append(l.activityAttrs(buf[:0], ctx, in), slog.Duration("duration", d))
	if err != nil {
		attrs = errAttrs(attrs, err)
	}
	l.emit(ctx, level, msg, attrs)
}

// errAttrs adds err and, for a recovered panic, the stack it carries.
func errAttrs(attrs []slog.Attr, err error) []slog.Attr {
	attrs = append(attrs, slog.Any("err", err))
	var pe *engine.PanicError
	if errors.As(err, &pe) && pe.Stack != "" {
		attrs = append(attrs, slog.String("stack", pe.Stack))
	}
	return attrs
}
