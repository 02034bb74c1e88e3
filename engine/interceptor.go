package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"
)

// Interceptor is any value implementing one or more of WorkflowInterceptor,
// WorkflowOutboundInterceptor, ActivityInterceptor, ClientInterceptor and
// CheckpointInterceptor. Embed InterceptorBase to implement only what you need.
// In a list of interceptors the first is the outermost.
type Interceptor any

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

// WorkflowInterceptor wraps the workflow's inbound calls.
type WorkflowInterceptor interface {
	ExecuteWorkflow(ctx Context, in *ExecuteWorkflowInput, next func(Context, *ExecuteWorkflowInput) (any, error)) (any, error)
	HandleSignal(ctx Context, in *HandleSignalInput, next func(Context, *HandleSignalInput) error) error
	HandleQuery(ctx context.Context, in *HandleQueryInput, next func(context.Context, *HandleQueryInput) (any, error)) (any, error)
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
// for activities and children; the change travels with the call.
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

// WorkflowOutboundInterceptor wraps the calls a workflow makes. next schedules
// the call; it returns when the call is scheduled, not when it completes.
type WorkflowOutboundInterceptor interface {
	WorkflowOutbound(ctx Context, in *OutboundInput, next func(Context, *OutboundInput) error) error
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
// it passes on the same value or a copy of it.
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

// ActivityInterceptor wraps each activity attempt.
type ActivityInterceptor interface {
	ExecuteActivity(ctx context.Context, in *ActivityInput, next func(context.Context, *ActivityInput) (any, error)) (any, error)
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

// ClientInterceptor wraps the client's outbound calls.
type ClientInterceptor interface {
	ClientCall(ctx context.Context, in *ClientCallInput, next func(context.Context, *ClientCallInput) (any, error)) (any, error)
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
// retries each run's write alone. A run whose write still fails is not
// recorded: the worker lets it go and it is resumed from its record, after
// a pause that doubles with each such load (100 ms up to a minute), so the
// step whose record failed runs again (an activity is at-least-once). The
// error is logged with the run's ID. Interceptors that must not hold a run
// back (the legacy mirror) catch their own failures instead, for example
// with a savepoint.
type CheckpointInterceptor interface {
	Checkpoint(ctx context.Context, tx CheckpointTx, events []*CheckpointEvent) error
}

// InterceptorBase passes every call through. Embed it to implement only the
// methods you need.
type InterceptorBase struct{}

// ExecuteWorkflow calls next.
func (InterceptorBase) ExecuteWorkflow(ctx Context, in *ExecuteWorkflowInput, next func(Context, *ExecuteWorkflowInput) (any, error)) (any, error) {
	return next(ctx, in)
}

// HandleSignal calls next.
func (InterceptorBase) HandleSignal(ctx Context, in *HandleSignalInput, next func(Context, *HandleSignalInput) error) error {
	return next(ctx, in)
}

// HandleQuery calls next.
func (InterceptorBase) HandleQuery(ctx context.Context, in *HandleQueryInput, next func(context.Context, *HandleQueryInput) (any, error)) (any, error) {
	return next(ctx, in)
}

// WorkflowOutbound calls next.
func (InterceptorBase) WorkflowOutbound(ctx Context, in *OutboundInput, next func(Context, *OutboundInput) error) error {
	return next(ctx, in)
}

// ExecuteActivity calls next.
func (InterceptorBase) ExecuteActivity(ctx context.Context, in *ActivityInput, next func(context.Context, *ActivityInput) (any, error)) (any, error) {
	return next(ctx, in)
}

// ClientCall calls next.
func (InterceptorBase) ClientCall(ctx context.Context, in *ClientCallInput, next func(context.Context, *ClientCallInput) (any, error)) (any, error) {
	return next(ctx, in)
}

// ActivityInterceptorFunc adapts a function to ActivityInterceptor.
type ActivityInterceptorFunc func(ctx context.Context, in *ActivityInput, next func(context.Context, *ActivityInput) (any, error)) (any, error)

// ExecuteActivity calls f.
func (f ActivityInterceptorFunc) ExecuteActivity(ctx context.Context, in *ActivityInput, next func(context.Context, *ActivityInput) (any, error)) (any, error) {
	return f(ctx, in, next)
}

// WorkflowInterceptorFunc adapts a function to the ExecuteWorkflow part of
// WorkflowInterceptor; signals and queries pass through.
type WorkflowInterceptorFunc func(ctx Context, in *ExecuteWorkflowInput, next func(Context, *ExecuteWorkflowInput) (any, error)) (any, error)

// ExecuteWorkflow calls f.
func (f WorkflowInterceptorFunc) ExecuteWorkflow(ctx Context, in *ExecuteWorkflowInput, next func(Context, *ExecuteWorkflowInput) (any, error)) (any, error) {
	return f(ctx, in, next)
}

// HandleSignal calls next.
func (f WorkflowInterceptorFunc) HandleSignal(ctx Context, in *HandleSignalInput, next func(Context, *HandleSignalInput) error) error {
	return next(ctx, in)
}

// HandleQuery calls next.
func (f WorkflowInterceptorFunc) HandleQuery(ctx context.Context, in *HandleQueryInput, next func(context.Context, *HandleQueryInput) (any, error)) (any, error) {
	return next(ctx, in)
}

// ClientInterceptorFunc adapts a function to ClientInterceptor.
type ClientInterceptorFunc func(ctx context.Context, in *ClientCallInput, next func(context.Context, *ClientCallInput) (any, error)) (any, error)

// ClientCall calls f.
func (f ClientInterceptorFunc) ClientCall(ctx context.Context, in *ClientCallInput, next func(context.Context, *ClientCallInput) (any, error)) (any, error) {
	return f(ctx, in, next)
}

// CheckpointInterceptorFunc adapts a function to CheckpointInterceptor.
type CheckpointInterceptorFunc func(ctx context.Context, tx CheckpointTx, events []*CheckpointEvent) error

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
	outbound   []WorkflowOutboundInterceptor
	activity   []ActivityInterceptor
	client     []ClientInterceptor
	checkpoint []CheckpointInterceptor

	runWorkflow  func(Context, *ExecuteWorkflowInput) (any, error)
	callOutbound func(Context, *OutboundInput) error
	runActivity  func(context.Context, *ActivityInput) (any, error)
}

func buildChains(lists ...[]Interceptor) chains {
	var c chains
	for _, l := range lists {
		for _, i := range l {
			if x, ok := i.(WorkflowInterceptor); ok {
				c.workflow = append(c.workflow, x)
			}
			if x, ok := i.(WorkflowOutboundInterceptor); ok {
				c.outbound = append(c.outbound, x)
			}
			if x, ok := i.(ActivityInterceptor); ok {
				c.activity = append(c.activity, x)
			}
			if x, ok := i.(ClientInterceptor); ok {
				c.client = append(c.client, x)
			}
			if x, ok := i.(CheckpointInterceptor); ok {
				c.checkpoint = append(c.checkpoint, x)
			}
		}
	}
	c.runWorkflow = chainWorkflow(c.workflow, func(ctx Context, in *ExecuteWorkflowInput) (any, error) {
		return ctx.state().executeWorkflow(ctx, in)
	})
	c.callOutbound = chainOutbound(c.outbound, func(Context, *OutboundInput) error { return nil })
	c.runActivity = chainActivity(c.activity, func(ctx context.Context, in *ActivityInput) (any, error) {
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
	return c
}

// chain composes the interceptors of list around last so that list[0] is
// the outermost; call is the interceptor method for the call kind.
func chain[I, C, In any](list []I, call func(I, C, In, func(C, In) error) error, last func(C, In) error) func(C, In) error {
	next := last
	for i := len(list) - 1; i >= 0; i-- {
		ic, n := list[i], next
		next = func(ctx C, in In) error { return call(ic, ctx, in, n) }
	}
	return next
}

// chainResult is chain for calls that return a value.
func chainResult[I, C, In any](list []I, call func(I, C, In, func(C, In) (any, error)) (any, error), last func(C, In) (any, error)) func(C, In) (any, error) {
	next := last
	for i := len(list) - 1; i >= 0; i-- {
		ic, n := list[i], next
		next = func(ctx C, in In) (any, error) { return call(ic, ctx, in, n) }
	}
	return next
}

func chainActivity(list []ActivityInterceptor, last func(context.Context, *ActivityInput) (any, error)) func(context.Context, *ActivityInput) (any, error) {
	return chainResult(list, ActivityInterceptor.ExecuteActivity, last)
}

func chainWorkflow(list []WorkflowInterceptor, last func(Context, *ExecuteWorkflowInput) (any, error)) func(Context, *ExecuteWorkflowInput) (any, error) {
	return chainResult(list, WorkflowInterceptor.ExecuteWorkflow, last)
}

func chainQuery(list []WorkflowInterceptor, last func(context.Context, *HandleQueryInput) (any, error)) func(context.Context, *HandleQueryInput) (any, error) {
	return chainResult(list, WorkflowInterceptor.HandleQuery, last)
}

func chainClient(list []ClientInterceptor, last func(context.Context, *ClientCallInput) (any, error)) func(context.Context, *ClientCallInput) (any, error) {
	return chainResult(list, ClientInterceptor.ClientCall, last)
}

func chainSignal(list []WorkflowInterceptor, last func(Context, *HandleSignalInput) error) func(Context, *HandleSignalInput) error {
	return chain(list, WorkflowInterceptor.HandleSignal, last)
}

func chainOutbound(list []WorkflowOutboundInterceptor, last func(Context, *OutboundInput) error) func(Context, *OutboundInput) error {
	return chain(list, WorkflowOutboundInterceptor.WorkflowOutbound, last)
}
