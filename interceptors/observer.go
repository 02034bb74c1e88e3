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
	// rec, when set, makes the observer Recovery too, innermost: All sets
	// it when it places nothing between the two, which then saves
	// Recovery's frame and its call in each chain as well. A panic of next
	// becomes its *engine.PanicError first, in the deferred function that
	// then does the observer's work after next, so that work sees the
	// error, as it would with Recovery inside.
	rec *Recovery
}

// workflowCall is what ExecuteWorkflow keeps for its work after next.
type workflowCall struct {
	seg      *segment
	in       *engine.ExecuteWorkflowInput
	ctx      engine.Context
	returned bool // next returned (or its panic was recovered)
}

// ExecuteWorkflow traces the segment, counts a live start and end and logs
// them, as Tracing's, Metrics' and Logging's ExecuteWorkflow in a row.
func (o *observer) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (out any, err error) {
	w := workflowCall{seg: o.beginSegment(in), in: in}
	w.ctx = engine.WithValue(ctx, segmentKey{}, w.seg)
	defer o.workflowReturned(&w, &out, &err)
	if !in.Replaying {
		o.workflowStarted(w.seg, in)
	}
	out, err = next(w.ctx, in)
	w.returned = true
	return out, err
}

//go:noinline
func (o *observer) workflowStarted(seg *segment, in *engine.ExecuteWorkflowInput) {
	o.m.workflowStarted(in)
	o.l.workflowStarted(seg, in)
}

// workflowReturned, deferred around next, ends the segment; when the
// workflow function returned live it also counts and logs its end.
func (o *observer) workflowReturned(w *workflowCall, out *any, err *error) {
	if o.rec != nil {
		if r := recover(); r != nil {
			*out, *err, w.returned = nil, panicError(r), true
		}
	}
	if !w.returned { // unloaded (runtime.Goexit) or a panic unwinding
		w.seg.end(OutcomeSuspended, nil)
		return
	}
	live, outcome := !engine.IsReplaying(w.ctx), workflowOutcome(*err)
	if live {
		o.l.workflowEnded(w.seg, w.in, outcome, *err)
		o.m.workflowEnded(w.in, outcome)
	}
	w.seg.returned(live, outcome, *err)
}

// activityCall is what ExecuteActivity keeps for its work after next.
type activityCall struct {
	in       *engine.ActivityInput
	ctx      context.Context
	span     trace.Span
	c        *typeCounts
	start    time.Duration
	returned bool // next returned (or its panic was recovered)
}

// ExecuteActivity traces, counts and logs the attempt, as Tracing's,
// Metrics' and Logging's ExecuteActivity in a row; the attempt's duration
// is read once for both the histogram and the record.
func (o *observer) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (out any, err error) {
	a := activityCall{in: in}
	o.activityStarted(&a, ctx)
	defer o.activityReturned(&a, &out, &err)
	out, err = next(a.ctx, in)
	a.returned = true
	return out, err
}

//go:noinline
func (o *observer) activityStarted(a *activityCall, ctx context.Context) {
	a.ctx, a.span = o.startActivity(ctx, a.in)
	a.c, a.start = o.m.activityStarted(a.in)
	o.l.activityStarted(a.ctx, a.in)
}

// activityReturned, deferred around next, ends the attempt's span, counts
// and logs it. A panic that unwinds on (no rec) is left alone, as the
// three interceptors leave it.
func (o *observer) activityReturned(a *activityCall, out *any, err *error) {
	if o.rec != nil {
		if r := recover(); r != nil {
			*out, *err, a.returned = nil, panicError(r), true
		}
	}
	if a.returned {
		o.activityEnded(a, *err)
	}
}

//go:noinline
func (o *observer) activityEnded(a *activityCall, err error) {
	d, outcome := o.m.clock.now()-a.start, activityOutcome(err)
	o.l.activityEnded(a.ctx, a.in, d, outcome, err)
	o.m.activityEnded(a.ctx, a.c, a.in, d, outcome)
	endActivity(a.span, outcome, err)
}

// HandleSignal traces and logs a signal the workflow receives, as
// Tracing's and Logging's HandleSignal in a row (Metrics counts none).
func (o *observer) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) error {
	var span trace.Span
	if seg := segmentOf(ctx); !in.Replaying && seg != nil {
		span = o.startSignal(seg, in)
	}
	var err error
	if o.rec != nil {
		err = o.rec.HandleSignal(ctx, in, next)
	} else {
		err = next(ctx, in)
	}
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
	var (
		out any
		err error
	)
	if o.rec != nil {
		out, err = o.rec.HandleQuery(ctx, in, next)
	} else {
		out, err = next(ctx, in)
	}
	o.l.queryAnswered(ctx, in, start, err)
	if span != nil {
		endSpan(span, err)
	}
	return out, err
}
