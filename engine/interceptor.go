package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Interceptor is a value that takes part in one or more of the engine's
// chains, one interface a chain, each of one method: WorkflowInterceptor,
// SignalInterceptor, QueryInterceptor, WorkflowOutboundInterceptor,
// ActivityInterceptor, ClientInterceptor and CheckpointInterceptor. An
// interceptor embeds InterceptorBase (the sentinel that makes it an
// Interceptor) and implements the methods of the chains it takes part in;
// it is left out of the others, so a call through a chain passes only the
// interceptors that act on it. engine.New and Engine.NewWorker refuse an
// Interceptor that implements none of them, naming its type. In a list of
// interceptors the first is the outermost.
type Interceptor interface {
	isInterceptor()
}

// InterceptorBase makes a type an Interceptor. Embed it in every
// interceptor; it implements no chain.
type InterceptorBase struct{}

func (InterceptorBase) isInterceptor() {}

// Headers travel with a workflow: from the client call into the workflow, on
// into each activity and child workflow. They are persisted with the run, so
// they are the same after a replay and on another worker.
type Headers map[string]string

// Clone returns a copy that can be changed without touching h.
func (h Headers) Clone() Headers {
	out := make(Headers, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}

// WorkflowInfo describes the run a workflow call belongs to.
type WorkflowInfo struct {
	WorkflowID   string
	RunID        string
	WorkflowType string
	Queue        string
	// Loads counts the times this run has been loaded by a worker (1 on the
	// first load; higher after crashes, unloads and resumes). RunInfo.Loads
	// is the same count as stored.
	Loads int
	// StartTime is when the run was created (for a run that continues
	// another or resets it, when this run was created).
	StartTime time.Time
}

// ---- workflow inbound -----------------------------------------------------

// ExecuteWorkflowInput is what runs a workflow function.
type ExecuteWorkflowInput struct {
	Info    WorkflowInfo
	Headers Headers
	Args    any
	// Replaying is true when the run is being resumed by replay (it has
	// recorded steps) or replayed to answer a query; interceptors use it to
	// avoid doubling logs and metrics. A resumed run turns live later:
	// IsReplaying tells, and is false once the function has returned live.
	Replaying bool
}

// HandleSignalInput describes a signal the workflow consumes.
type HandleSignalInput struct {
	Info    WorkflowInfo
	Name    string
	Payload []byte
	// Headers are the sender's: those of the client call that sent the
	// signal (a trace context, who sent it), not the run's. They are nil
	// when the sender set none and on replay, when the signal is read back
	// from the record and there is nothing to act on again.
	Headers   Headers
	Replaying bool
}

// HandleQueryInput describes a query answered by the workflow's handler.
type HandleQueryInput struct {
	Info WorkflowInfo
	Name string
	Args []byte
}

// WorkflowNext runs the rest of the workflow chain and the workflow function.
type WorkflowNext func(Context, *ExecuteWorkflowInput) (any, error)

// WorkflowInterceptor wraps each execution of a workflow function: the first
// and every replay that resumes the run.
type WorkflowInterceptor interface {
	Interceptor
	ExecuteWorkflow(ctx Context, in *ExecuteWorkflowInput, next WorkflowNext) (any, error)
}

// SignalNext runs the rest of the signal chain and delivers the signal.
type SignalNext func(Context, *HandleSignalInput) error

// SignalInterceptor wraps the delivery of each signal the workflow consumes.
type SignalInterceptor interface {
	Interceptor
	HandleSignal(ctx Context, in *HandleSignalInput, next SignalNext) error
}

// QueryNext runs the rest of the query chain and the query's handler.
type QueryNext func(context.Context, *HandleQueryInput) (any, error)

// QueryInterceptor wraps each query a workflow's handler answers.
type QueryInterceptor interface {
	Interceptor
	HandleQuery(ctx context.Context, in *HandleQueryInput, next QueryNext) (any, error)
}

// ---- workflow outbound ----------------------------------------------------

// OutboundKind names the kind of call a workflow makes.
type OutboundKind string

// Outbound call kinds.
const (
	OutboundActivity   OutboundKind = "activity"
	OutboundTimer      OutboundKind = "timer"
	OutboundChild      OutboundKind = "child"
	OutboundSideEffect OutboundKind = "side_effect"
)

// OutboundInput describes a call a workflow makes: an activity, a timer, a
// child workflow or a side effect. Headers may be changed by an interceptor
// for activities and children, in place or by putting another map there;
// the change travels with the call and no other. The map is the
// interceptor's during the call only: the engine lends the same one to the
// next call when it was not changed.
type OutboundInput struct {
	Info      WorkflowInfo
	Kind      OutboundKind
	Name      string
	Seq       int
	Args      any
	Headers   Headers
	Duration  time.Duration
	Replaying bool
	// Result is an activity call's pending outcome (its result as JSON, or
	// its error); it is the zero Future for other kinds. An interceptor may
	// keep it and Get it later from workflow code, to learn whether a call
	// it saw scheduled succeeded and with what result; on replay it resolves
	// from the record, like the caller's own future.
	Result Future[json.RawMessage]
	// OutcomeUnknownOnCancel, set by an interceptor on an activity call,
	// says that an attempt cut short by the run's cancellation (it returned
	// the context's cancellation error) may have done its work all the
	// same: the engine then treats its outcome as unknown, as for an
	// attempt lost with its worker, and runs the activity again under the
	// same idempotency key on a context the cancellation does not cancel,
	// so what really happened is recorded. The cancel package sets it on
	// the activities it compensates, so a charge that went through is
	// refunded; other activities stop at their cancellation.
	OutcomeUnknownOnCancel bool
}

// OutboundNext runs the rest of the outbound chain; the call is scheduled
// after the chain returns nil.
type OutboundNext func(Context, *OutboundInput) error

// WorkflowOutboundInterceptor wraps the calls a workflow makes. next schedules
// the call; it returns when the call is scheduled, not when it completes. An
// error refuses the call: the caller's future fails with it.
type WorkflowOutboundInterceptor interface {
	Interceptor
	WorkflowOutbound(ctx Context, in *OutboundInput, next OutboundNext) error
}

// ---- activity inbound -----------------------------------------------------

// ActivityInfo describes one activity attempt.
type ActivityInfo struct {
	Workflow     WorkflowInfo
	ActivityName string
	// ActivityID is stable for the step across attempts and crashes.
	ActivityID string
	Attempt    int
	// IdempotencyKey is stable across retries and re-execution after a crash.
	IdempotencyKey string
	ScheduledAt    time.Time
}

// ActivityInput is one attempt of an activity. An interceptor that changes
// it passes on the same value or a copy of it. Headers may be shared with
// the run's other activities: to change them, put a changed copy there
// (Clone), never write into them.
type ActivityInput struct {
	Info    ActivityInfo
	Headers Headers
	Args    any

	def activityDef // what the innermost step runs
	// begin, when set, makes the attempt's start durable; the innermost
	// step calls it just before the activity function, so an attempt that
	// an interceptor stops first (a limiter's snooze) records nothing.
	begin func(context.Context) error
}

// ActivityNext runs the rest of the activity chain and the activity.
type ActivityNext func(context.Context, *ActivityInput) (any, error)

// ActivityInterceptor wraps each activity attempt.
type ActivityInterceptor interface {
	Interceptor
	ExecuteActivity(ctx context.Context, in *ActivityInput, next ActivityNext) (any, error)
}

// ---- client outbound ------------------------------------------------------

// ClientCallKind names a client operation.
type ClientCallKind string

// Client call kinds.
const (
	ClientStart  ClientCallKind = "start"
	ClientSignal ClientCallKind = "signal"
	ClientQuery  ClientCallKind = "query"
	ClientCancel ClientCallKind = "cancel"
	ClientReset  ClientCallKind = "reset"
)

// ClientCallInput describes a client call. For a start, Headers become the
// run's headers, so an interceptor can add a trace context or a customer ID;
// for a signal, they travel with the signal to the workflow's signal
// interceptors (HandleSignalInput.Headers).
type ClientCallInput struct {
	Kind         ClientCallKind
	WorkflowID   string
	WorkflowType string
	// Name is the signal or query name.
	Name    string
	Args    any
	Headers Headers
}

// ClientNext runs the rest of the client chain and the call.
type ClientNext func(context.Context, *ClientCallInput) (any, error)

// ClientInterceptor wraps the client's outbound calls.
type ClientInterceptor interface {
	Interceptor
	ClientCall(ctx context.Context, in *ClientCallInput, next ClientNext) (any, error)
}

// ---- checkpoint transaction -----------------------------------------------

// CheckpointKind says what a checkpoint records.
type CheckpointKind string

// Checkpoint kinds.
const (
	CheckpointWorkflowStarted   CheckpointKind = "workflow_started"
	CheckpointActivityCompleted CheckpointKind = "activity_completed"
	CheckpointActivityFailed    CheckpointKind = "activity_failed"
	CheckpointWorkflowWaiting   CheckpointKind = "workflow_waiting"
	CheckpointWorkflowClosed    CheckpointKind = "workflow_closed"
)

// CheckpointEvent is one durable state change, handed to CheckpointInterceptors
// inside the transaction that records it.
type CheckpointEvent struct {
	Kind         CheckpointKind
	WorkflowID   string
	RunID        string
	WorkflowType string
	Headers      Headers
	// Status is the run's status after the change: running, waiting,
	// completed, failed, cancelled or continued.
	Status Status
	// Seq orders events of one run; a later event has a higher Seq.
	Seq int
	// ActivityName, Attempt, Result and Err describe an activity checkpoint.
	ActivityName string
	Attempt      int
	// Input is the decoded input of the workflow (for workflow events) or of
	// the activity (for activity events: the value its last attempt was
	// called with), when available in this process.
	Input  any
	Result any
	Err    error
	At     time.Time
}

// CheckpointTx is the slice of *sql.Tx a CheckpointInterceptor may use.
type CheckpointTx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// CheckpointInterceptor writes in the transaction that records checkpoints.
// Events arrive in batches (group commit); events of one run are in order.
// Returning an error (or panicking) rolls the batch back; the engine then
// retries each run's write alone. When that write still fails, and its
// activity outcomes are refused on their own too, an activity
// outcome it carried fails its attempt with the interceptor's error (an
// *ApplicationError as returned, else one of type
// ErrorTypeCheckpointRefused), recorded without the interceptors: the
// activity's retry policy decides, so the next attempt waits its backoff in
// the record, and when the policy gives up the step fails with that error
// (its activity_failed event goes to the interceptors like any other).
// Activity outcomes the interceptor takes on their own are recorded, so a
// refused run end or timer never makes an activity run again. The rest of
// the write is not recorded: the worker lets the run go and it is resumed
// from its record, after a pause that doubles with each refusal in a row
// (100 ms up to a minute), with the refusal as its error (type
// ErrorTypeCheckpointRefused, shown by Describe). After
// Config.CheckpointRefusalLimit refusals in a row (default 20) the run
// fails with an ErrorTypeNeedsOperator error holding the last refusal,
// recorded without the interceptors, for an operator to reset once the
// cause is fixed. The error is logged with the run's ID.
// Interceptors that must not hold a run back or make an activity run again
// (the legacy mirror) catch their own failures instead, for example with a
// savepoint.
//
// Write through tx. ctx is the commit's: its deadline bounds the
// statements sent through tx (the connection keeps it), but while the
// commit's transaction holds that connection ctx's Done is nil, so a call
// made under ctx elsewhere (on the engine's pool, on another pool, to
// another service) is not ended by it: give such a call a deadline of its
// own, from context.WithTimeout(ctx, ...).
type CheckpointInterceptor interface {
	Interceptor
	Checkpoint(ctx context.Context, tx CheckpointTx, events []*CheckpointEvent) error
}

// ActivityInterceptorFunc adapts a function to ActivityInterceptor.
type ActivityInterceptorFunc func(ctx context.Context, in *ActivityInput, next ActivityNext) (any, error)

func (ActivityInterceptorFunc) isInterceptor() {}

// ExecuteActivity calls f.
func (f ActivityInterceptorFunc) ExecuteActivity(ctx context.Context, in *ActivityInput, next ActivityNext) (any, error) {
	return f(ctx, in, next)
}

// WorkflowInterceptorFunc adapts a function to WorkflowInterceptor.
type WorkflowInterceptorFunc func(ctx Context, in *ExecuteWorkflowInput, next WorkflowNext) (any, error)

func (WorkflowInterceptorFunc) isInterceptor() {}

// ExecuteWorkflow calls f.
func (f WorkflowInterceptorFunc) ExecuteWorkflow(ctx Context, in *ExecuteWorkflowInput, next WorkflowNext) (any, error) {
	return f(ctx, in, next)
}

// ClientInterceptorFunc adapts a function to ClientInterceptor.
type ClientInterceptorFunc func(ctx context.Context, in *ClientCallInput, next ClientNext) (any, error)

func (ClientInterceptorFunc) isInterceptor() {}

// ClientCall calls f.
func (f ClientInterceptorFunc) ClientCall(ctx context.Context, in *ClientCallInput, next ClientNext) (any, error) {
	return f(ctx, in, next)
}

// CheckpointInterceptorFunc adapts a function to CheckpointInterceptor.
type CheckpointInterceptorFunc func(ctx context.Context, tx CheckpointTx, events []*CheckpointEvent) error

func (CheckpointInterceptorFunc) isInterceptor() {}

// Checkpoint calls f.
func (f CheckpointInterceptorFunc) Checkpoint(ctx context.Context, tx CheckpointTx, events []*CheckpointEvent) error {
	return f(ctx, tx, events)
}

// chains holds the interceptors of one worker (engine's first, then the
// worker's), split by kind, outermost first, and the chains that do not
// depend on the call composed once: a call through them allocates nothing
// for the chain.
type chains struct {
	workflow   []WorkflowInterceptor
	signal     []SignalInterceptor
	query      []QueryInterceptor
	outbound   []WorkflowOutboundInterceptor
	activity   []ActivityInterceptor
	client     []ClientInterceptor
	checkpoint []CheckpointInterceptor

	// The workflow and activity chains keep their outermost interceptor
	// apart from the rest, composed: their callers (runState.main,
	// callActivity) call its method directly rather than through a wrap, a
	// frame fewer in every run's stack while it waits inside both chains
	// (the collector walks each parked goroutine's frames at every cycle).
	// A method of chains that did it would not be inlined: a frame again.
	outerWorkflow WorkflowInterceptor // nil without workflow interceptors
	innerWorkflow WorkflowNext
	outerActivity ActivityInterceptor // nil without activity interceptors
	innerActivity ActivityNext
	callOutbound  OutboundNext
}

// buildChains sorts the interceptors of lists (field names the list for
// errors, such as "Config.Interceptors") into their chains. An interceptor
// that takes part in no chain, or a nil one, is an error naming it: it
// would otherwise be silently ignored.
func buildChains(fields []string, lists ...[]Interceptor) (chains, error) {
	var c chains
	for n, l := range lists {
		for i, ic := range l {
			if ic == nil {
				return c, fmt.Errorf("engine: %s[%d] is nil", fields[n], i)
			}
			in := false
			if x, ok := ic.(WorkflowInterceptor); ok {
				c.workflow, in = append(c.workflow, x), true
			}
			if x, ok := ic.(SignalInterceptor); ok {
				c.signal, in = append(c.signal, x), true
			}
			if x, ok := ic.(QueryInterceptor); ok {
				c.query, in = append(c.query, x), true
			}
			if x, ok := ic.(WorkflowOutboundInterceptor); ok {
				c.outbound, in = append(c.outbound, x), true
			}
			if x, ok := ic.(ActivityInterceptor); ok {
				c.activity, in = append(c.activity, x), true
			}
			if x, ok := ic.(ClientInterceptor); ok {
				c.client, in = append(c.client, x), true
			}
			if x, ok := ic.(CheckpointInterceptor); ok {
				c.checkpoint, in = append(c.checkpoint, x), true
			}
			if !in {
				return c, fmt.Errorf("engine: %s[%d]: %T takes part in no chain: it implements none of "+
					"WorkflowInterceptor, SignalInterceptor, QueryInterceptor, WorkflowOutboundInterceptor, "+
					"ActivityInterceptor, ClientInterceptor and CheckpointInterceptor (check the methods' signatures)", fields[n], i, ic)
			}
		}
	}
	c.outerWorkflow, c.innerWorkflow = outerAndInner(c.workflow, wrapWorkflow, func(ctx Context, in *ExecuteWorkflowInput) (any, error) {
		return ctx.state().executeWorkflow(ctx, in)
	})
	c.callOutbound = compose(c.outbound, wrapOutbound, func(Context, *OutboundInput) error { return nil })
	c.outerActivity, c.innerActivity = outerAndInner(c.activity, wrapActivity, func(ctx context.Context, in *ActivityInput) (any, error) {
		if in.def == nil {
			return nil, NewNonRetryableError(ErrorTypeBadInput, "an interceptor passed on an ActivityInput it built itself: pass on the one it received, or a copy", nil)
		}
		if in.begin != nil {
			if err := in.begin(ctx); err != nil {
				return nil, err
			}
		}
		return in.def.execute(ctx, in.Args)
	})
	return c, nil
}

// compose wraps last in the interceptors of list so that list[0] is the
// outermost: wrap returns the next function of one interceptor around
// another's. Each wrap calls its interceptor's method directly, not
// through a method value, so a call through the chain takes one small
// frame per interceptor (a workflow's activities run on its goroutine,
// inside two chains, and stack held there can make the goroutine copy its
// stack as it grows).
func compose[I, N any](list []I, wrap func(I, N) N, last N) N {
	next := last
	for i := len(list) - 1; i >= 0; i-- {
		next = wrap(list[i], next)
	}
	return next
}

// outerAndInner returns the outermost interceptor of list (the zero I when
// list is empty) and the rest of the list composed around last.
func outerAndInner[I, N any](list []I, wrap func(I, N) N, last N) (I, N) {
	var outer I
	if len(list) > 0 {
		outer, list = list[0], list[1:]
	}
	return outer, compose(list, wrap, last)
}

func wrapWorkflow(ic WorkflowInterceptor, next WorkflowNext) WorkflowNext {
	return func(ctx Context, in *ExecuteWorkflowInput) (any, error) { return ic.ExecuteWorkflow(ctx, in, next) }
}

func wrapSignal(ic SignalInterceptor, next SignalNext) SignalNext {
	return func(ctx Context, in *HandleSignalInput) error { return ic.HandleSignal(ctx, in, next) }
}

func wrapQuery(ic QueryInterceptor, next QueryNext) QueryNext {
	return func(ctx context.Context, in *HandleQueryInput) (any, error) { return ic.HandleQuery(ctx, in, next) }
}

func wrapOutbound(ic WorkflowOutboundInterceptor, next OutboundNext) OutboundNext {
	return func(ctx Context, in *OutboundInput) error { return ic.WorkflowOutbound(ctx, in, next) }
}

func wrapActivity(ic ActivityInterceptor, next ActivityNext) ActivityNext {
	return func(ctx context.Context, in *ActivityInput) (any, error) { return ic.ExecuteActivity(ctx, in, next) }
}

func wrapClient(ic ClientInterceptor, next ClientNext) ClientNext {
	return func(ctx context.Context, in *ClientCallInput) (any, error) { return ic.ClientCall(ctx, in, next) }
}
