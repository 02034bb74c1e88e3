package interceptors

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
)

// observer is Tracing, Metrics and Logging in one interceptor, as All
// places them: around each call it does what the three do in that order,
// Tracing outermost, so its spans, metrics and records are theirs. It is
// one frame in each chain instead of three, and the engine's call into it
// one instead of three: a workflow's goroutine parks inside both the
// workflow and the activity chain while its activity's start is made
// durable, and the garbage collector walks every parked goroutine's frames
// at every cycle. Client and outbound calls, which only Tracing takes part
// in, go to Tracing's own methods (promoted from the embedded pointer: the
// compiler's wrapper jumps to them, no frame of its own).
type observer struct {
	engine.InterceptorBase
	*Tracing
	m *Metrics
	l *Logging
}

// ExecuteWorkflow traces the segment, counts a live start and end and logs
// them, as Tracing's, Metrics' and Logging's ExecuteWorkflow in a row.
func (o *observer) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	seg := o.beginSegment(in)
	returned := false
	defer seg.endUnlessReturned(&returned)
	ctx = engine.WithValue(ctx, segmentKey{}, seg)
	if !in.Replaying {
		o.workflowStarted(seg, in)
	}
	out, err := next(ctx, in)
	returned = true
	o.workflowReturned(seg, in, !engine.IsReplaying(ctx), err)
	return out, err
}

//go:noinline
func (o *observer) workflowStarted(seg *segment, in *engine.ExecuteWorkflowInput) {
	o.m.workflowStarted(in)
	o.l.workflowStarted(seg, in)
}

//go:noinline
func (o *observer) workflowReturned(seg *segment, in *engine.ExecuteWorkflowInput, live bool, err error) {
	outcome := workflowOutcome(err)
	if live {
		o.l.workflowEnded(seg, in, outcome, err)
		o.m.workflowEnded(in, outcome)
	}
	seg.returned(live, outcome, err)
}

// ExecuteActivity traces, counts and logs the attempt, as Tracing's,
// Metrics' and Logging's ExecuteActivity in a row; the attempt's duration
// is read once for both the histogram and the record.
func (o *observer) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	ctx, span := o.startActivity(ctx, in)
	c, start := o.m.activityStarted(in)
	o.l.activityStarted(ctx, in)
	out, err := next(ctx, in)
	o.activityEnded(ctx, span, c, in, start, err)
	return out, err
}

//go:noinline
func (o *observer) activityEnded(ctx context.Context, span trace.Span, c *typeCounts, in *engine.ActivityInput,
	start time.Duration, err error) {
	d, outcome := o.m.clock.now()-start, activityOutcome(err)
	o.l.activityEnded(ctx, in, d, outcome, err)
	o.m.activityEnded(ctx, c, in, d, outcome)
	endActivity(span, outcome, err)
}

// HandleSignal traces and logs a signal the workflow receives, as
// Tracing's and Logging's HandleSignal in a row (Metrics counts none).
func (o *observer) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) error {
	var span trace.Span
	if seg := segmentOf(ctx); !in.Replaying && seg != nil {
		span = o.startSignal(seg, in)
	}
	err := next(ctx, in)
	if !in.Replaying {
		o.l.signalHandled(ctx, in, err)
	}
	if span != nil {
		endSpan(span, err)
	}
	return err
}

// HandleQuery traces and logs a query, as Tracing's and Logging's
// HandleQuery in a row.
func (o *observer) HandleQuery(ctx context.Context, in *engine.HandleQueryInput,
	next engine.QueryNext) (any, error) {
	var span trace.Span
	if trace.SpanContextFromContext(ctx).IsValid() {
		ctx, span = o.startQuery(ctx, in)
	}
	start := time.Now()
	out, err := next(ctx, in)
	o.l.queryAnswered(ctx, in, start, err)
	if span != nil {
		endSpan(span, err)
	}
	return out, err
}
