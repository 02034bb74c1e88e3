package cancel

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/graftdev/graft/engine"
)

// Names the package gives to its activities, query, signal and header. They
// are part of the record and of the mirror's contract: do not change them.
const (
	// ReportActivity records a Report as its input each time compensation
	// ends or stops for an operator (see the package doc).
	ReportActivity = "graft.cancel.report"
	// AbortActivity requests the run's own cancellation for Abort.
	AbortActivity = "graft.cancel.abort"
	// StatusQuery answers a run's Report (see Status).
	StatusQuery = "graft.cancel.status"
	// OperatorSignal carries an OperatorAction to a run that needs an operator.
	OperatorSignal = "graft.cancel.operator"
	// HeaderIdempotencyKey carries a compensation's idempotency key into its
	// activity (read it with IdempotencyKey).
	HeaderIdempotencyKey = "graft-cancel-idempotency-key"
)

// abortSignal is never sent: Abort waits on it only to reach a cancellation point.
const abortSignal = "graft.cancel.abort_wait"

// ErrNotInstalled means the workflow runs without the cancel interceptor, so a
// compensation could not be recorded.
var ErrNotInstalled = errors.New("cancel: the cancel interceptor is not installed on this engine")

// Config configures an Interceptor. Zero values take the documented defaults.
type Config struct {
	// Compensations declares which activity undoes which (see Undo). An
	// activity may be undone by one compensation only.
	Compensations []Compensation
	// CompensateOnFailure lists the workflow types whose compensations also
	// run when the workflow fails (returns an error without having observed a
	// cancellation). Default: none; compensations run on cancellation only.
	CompensateOnFailure []string
	// ActivityOptions apply to compensation calls whose declaration or Add
	// call sets none. Default DefaultActivityOptions(): a compensation that
	// still fails after 10 attempts (about 4 minutes) needs an operator.
	ActivityOptions *engine.ActivityOptions
}

// DefaultActivityOptions returns the compensation defaults: a minute per
// attempt, retries from 1s doubling up to a minute, 10 attempts.
func DefaultActivityOptions() engine.ActivityOptions {
	return engine.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2,
			MaximumInterval: time.Minute, MaximumAttempts: 10},
	}
}

// Interceptor records compensable activities as workflows schedule them and
// runs their compensations when a workflow is cancelled (see the package
// doc). It is a WorkflowInterceptor and a WorkflowOutboundInterceptor; list it
// in engine.Config.Interceptors (so queries see it too) and call Register.
// Use one Interceptor per Engine.
type Interceptor struct {
	engine.InterceptorBase

	byDo      map[string]*Compensation
	onFailure map[string]bool
	opts      engine.ActivityOptions

	report *engine.Activity[Report, struct{}]
	abort  *engine.Activity[abortRequest, struct{}]
	client atomic.Pointer[engine.Client]
}

var (
	_ engine.WorkflowInterceptor         = (*Interceptor)(nil)
	_ engine.WorkflowOutboundInterceptor = (*Interceptor)(nil)
)

// New validates cfg and returns an Interceptor.
func New(cfg Config) (*Interceptor, error) {
	i := &Interceptor{byDo: map[string]*Compensation{}, onFailure: map[string]bool{}, opts: DefaultActivityOptions()}
	for n := range cfg.Compensations {
		c := cfg.Compensations[n]
		switch {
		case c.err != nil:
			return nil, fmt.Errorf("cancel: Config.Compensations[%d]: %w", n, c.err)
		case c.do == "" && c.undo.name == "":
			return nil, fmt.Errorf("cancel: Config.Compensations[%d] is empty: build it with Undo", n)
		case i.byDo[c.do] != nil:
			return nil, fmt.Errorf("cancel: Config.Compensations[%d]: %q already has a compensation", n, c.do)
		case c.do == c.undo.name:
			return nil, fmt.Errorf("cancel: Config.Compensations[%d]: %q cannot undo itself", n, c.do)
		}
		if err := checkOptions(c.opts); err != nil {
			return nil, fmt.Errorf("cancel: Config.Compensations[%d]: %w", n, err)
		}
		i.byDo[c.do] = &c
	}
	for n, t := range cfg.CompensateOnFailure {
		if t == "" {
			return nil, fmt.Errorf("cancel: Config.CompensateOnFailure[%d] is empty", n)
		}
		i.onFailure[t] = true
	}
	if cfg.ActivityOptions != nil {
		if err := checkOptions(cfg.ActivityOptions); err != nil {
			return nil, fmt.Errorf("cancel: Config.ActivityOptions: %w", err)
		}
		i.opts = *cfg.ActivityOptions
	}
	i.report = engine.NewActivity(ReportActivity, reportStep).WithOptions(engine.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	i.abort = engine.NewActivity(AbortActivity, i.requestCancel).WithOptions(engine.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	return i, nil
}

func checkOptions(o *engine.ActivityOptions) error {
	if o == nil {
		return nil
	}
	if o.StartToCloseTimeout < 0 || o.ScheduleToCloseTimeout < 0 || o.HeartbeatTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	if o.RetryPolicy != nil && o.RetryPolicy.MaximumAttempts < 0 {
		return errors.New("RetryPolicy.MaximumAttempts must not be negative")
	}
	return nil
}

// Register registers the package's own activities (ReportActivity,
// AbortActivity) on e and binds the Client that Abort uses. Register the
// activities you declared in Undo and Add yourself, as usual.
func (i *Interceptor) Register(e *engine.Engine) error {
	if err := e.Register(i.report, i.abort); err != nil {
		return fmt.Errorf("cancel: register: %w", err)
	}
	i.client.Store(e.Client())
	return nil
}

// ExecuteWorkflow gives the run its compensation stack and, when the workflow
// returns a cancellation (or a failure, where configured), runs the stack.
func (i *Interceptor) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	st := &stack{i: i, info: in.Info}
	ctx = engine.WithValue(ctx, stackKey{}, st)
	engine.SetQueryHandler(ctx, StatusQuery, func(struct{}) (Report, error) { return st.snapshot(), nil })
	out, err := next(ctx, in)
	if err == nil || engine.IsContinueAsNew(err) {
		return out, err
	}
	switch {
	case ctx.Err() != nil:
		st.compensate(engine.Disconnected(ctx), TriggerCancel, reasonOf(ctx.Err()))
	case i.onFailure[in.Info.WorkflowType]:
		st.compensate(engine.Disconnected(ctx), TriggerFailure, err.Error())
	}
	return out, err
}

func reasonOf(err error) string {
	var ce *engine.CanceledError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return err.Error()
}

// WorkflowOutbound records each compensable activity the workflow schedules,
// and gives compensation calls their idempotency key header.
func (i *Interceptor) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput,
	next engine.OutboundNext) error {
	if in.Kind != engine.OutboundActivity {
		return next(ctx, in)
	}
	if key, ok := ctx.Value(undoKey{}).(string); ok {
		if in.Headers == nil {
			in.Headers = engine.Headers{}
		}
		in.Headers[HeaderIdempotencyKey] = key
	} else if st := stackOf(ctx); st != nil && !st.compensating {
		st.calls = append(st.calls, in.Result)
		if c := i.byDo[in.Name]; c != nil {
			// A call the cancellation cut short may have gone through: the
			// engine then finds out, under the same idempotency key, so
			// that what went through is compensated.
			in.OutcomeUnknownOnCancel = true
			st.entries = append(st.entries, &entry{id: fmt.Sprintf("s%d", in.Seq), activity: in.Name, comp: c,
				undo: c.undo, args: in.Args, result: in.Result, opts: c.opts, status: StepRecorded})
		}
	}
	return next(ctx, in)
}

// IdempotencyKey returns the key a compensation activity gives its provider:
// the same for every attempt, crash, operator retry and reset that keeps the
// compensated step. Outside a compensation it is the engine's key. It panics
// outside an activity.
func IdempotencyKey(ctx context.Context) string {
	if k := engine.ActivityHeadersOf(ctx)[HeaderIdempotencyKey]; k != "" {
		return k
	}
	return engine.ActivityInfoOf(ctx).IdempotencyKey
}
