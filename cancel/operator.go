package cancel

import (
	"context"
	"errors"
	"fmt"

	"github.com/graftdev/graft/engine"
)

// Action is an operator's decision on a failed compensation.
type Action string

// Actions.
const (
	// ActionRetry runs the failed compensation again, with the same key.
	ActionRetry Action = "retry"
	// ActionResolve records that the compensation was done by hand.
	ActionResolve Action = "resolve"
)

// Enum lists the actions: the payload's JSON Schema (as an API lists it,
// and as a server that does not register the workflow checks it) allows
// these and no other.
func (Action) Enum() []string { return []string{string(ActionRetry), string(ActionResolve)} }

// UnmarshalText refuses an action that is none of the actions, so that a
// misspelled one is an error where the signal is sent rather than a signal
// the run ignores. A run that reads one anyway (sent by Client.Signal
// without a check, or recorded before this refusal) ignores it, as before.
func (a *Action) UnmarshalText(b []byte) error {
	switch v := Action(b); v {
	case ActionRetry, ActionResolve:
		*a = v
		return nil
	}
	return fmt.Errorf("cancel: got action %q, want one of %q, %q", b, ActionRetry, ActionResolve)
}

// OperatorAction is the payload of OperatorSignal.
type OperatorAction struct {
	Action Action `json:"action"`
	// Step names the failed compensation (StepReport.Step). Required for
	// ActionResolve, so a stale resolve cannot settle a later failure; empty
	// means "whichever failed" for ActionRetry.
	Step string `json:"step,omitempty"`
	// Note is recorded with a resolve (who refunded, and how).
	Note string `json:"note,omitempty"`
}

// Check says why a run would ignore the action for what it leaves out:
// no action, or a resolve without the step it resolves. An API that sends
// an operator's action checks it first, naming where in the payload.
func (a OperatorAction) Check() error {
	switch {
	case a.Action == "":
		return fmt.Errorf("at /action: missing, want one of %q, %q", ActionRetry, ActionResolve)
	case a.Action == ActionResolve && a.Step == "":
		return errors.New("at /step: missing, a resolve names the step (StepReport.Step) it resolves")
	}
	return nil
}

// Retry asks a run that needs an operator to run its failed compensation
// again. The retry uses the same idempotency key, so a compensation that in
// fact went through before failing is not done twice. A retry sent while no
// compensation is waiting applies to the next one that fails.
func Retry(ctx context.Context, c *engine.Client, workflowID string) error {
	return c.Signal(ctx, workflowID, OperatorSignal, OperatorAction{Action: ActionRetry})
}

// Resolve tells a run that needs an operator that the failed compensation
// step (StepReport.Step, from Status) was done by hand; note is recorded in
// the report. Compensation goes on with the next step.
func Resolve(ctx context.Context, c *engine.Client, workflowID, step, note string) error {
	if step == "" {
		return errors.New("cancel: Resolve needs the step (StepReport.Step) it resolves")
	}
	return c.Signal(ctx, workflowID, OperatorSignal, OperatorAction{Action: ActionResolve, Step: step, Note: note})
}

type abortRequest struct {
	WorkflowID string `json:"workflow_id"`
	Reason     string `json:"reason"`
}

// requestCancel is AbortActivity: the run's own cancellation, requested
// through the Client like any other, so the run's status, reason and children
// are handled exactly as for an operator's cancel.
func (i *Interceptor) requestCancel(ctx context.Context, r abortRequest) (struct{}, error) {
	c := i.client.Load()
	if c == nil {
		return struct{}{}, engine.NewNonRetryableError("cancel.NotRegistered",
			"cancel: Abort needs Interceptor.Register to have been called in the worker process", nil)
	}
	err := c.Cancel(ctx, r.WorkflowID, r.Reason)
	if errors.Is(err, engine.ErrNotRunning) || errors.Is(err, engine.ErrNotFound) {
		return struct{}{}, engine.NewNonRetryableError("cancel.NotRunning", err.Error(), nil)
	}
	return struct{}{}, err
}

// Abort ends the calling operation as cancelled, with compensation: the
// self-cancellation for a workflow that learns its operation cannot go on (a
// registry rejects a renewal for good). It requests the run's cancellation
// (durably, through AbortActivity), waits until the workflow observes it, and
// returns the *engine.CanceledError; return it from the workflow function:
//
//	if isPermanent(err) {
//		return Result{}, cancel.Abort(ctx, "registry rejected the renewal: "+err.Error())
//	}
//
// If the run is already cancelled, Abort returns that cancellation at once.
func Abort(ctx engine.Context, reason string) error {
	st := stackOf(ctx)
	if st == nil {
		return fmt.Errorf("cancel: Abort: %w", ErrNotInstalled)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := st.i.abort.Run(ctx, abortRequest{WorkflowID: engine.WorkflowInfoOf(ctx).WorkflowID, Reason: reason}); err != nil {
		return err
	}
	ch := engine.GetSignalChannel[struct{}](ctx, abortSignal)
	for {
		if _, err := ch.Receive(ctx); err != nil && ctx.Err() != nil {
			return err
		}
	}
}
