package cancel

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/graftdev/graft/engine"
)

// Trigger says why compensations run.
type Trigger string

// Triggers.
const (
	// TriggerCancel: the workflow returned after observing its cancellation
	// (requested by a client, an operator, or Abort).
	TriggerCancel Trigger = "cancel"
	// TriggerFailure: the workflow failed and its type is listed in
	// Config.CompensateOnFailure.
	TriggerFailure Trigger = "failure"
)

// Outcome is where a run's compensation stands.
type Outcome string

// Outcomes.
const (
	// OutcomeNone: nothing triggered compensation (yet).
	OutcomeNone Outcome = ""
	// OutcomeCompensating: compensations are running.
	OutcomeCompensating Outcome = "compensating"
	// OutcomeNeedsOperator: a compensation exhausted its retries; the run
	// waits for Retry or Resolve.
	OutcomeNeedsOperator Outcome = "needs_operator"
	// OutcomeCompensated: every recorded compensation ran (or was not
	// needed, or was resolved by an operator).
	OutcomeCompensated Outcome = "compensated"
)

// StepStatus is where one compensation stands.
type StepStatus string

// Step statuses.
const (
	// StepRecorded: recorded; nothing triggered compensation.
	StepRecorded StepStatus = "recorded"
	// StepPending: compensation triggered, this step's turn has not come (or
	// an operator asked for a retry).
	StepPending StepStatus = "pending"
	// StepCompensated: the compensation activity succeeded.
	StepCompensated StepStatus = "compensated"
	// StepFailed: the compensation activity exhausted its retries.
	StepFailed StepStatus = "failed"
	// StepResolved: an operator resolved it by hand (Resolve).
	StepResolved StepStatus = "resolved"
	// StepNotNeeded: the compensated activity did not succeed, so there was
	// nothing to undo; Error says how it ended.
	StepNotNeeded StepStatus = "not_needed"
)

// Report is what a run has compensated, or will. Its JSON form is the
// contract with mirrors that cannot import this package.
type Report struct {
	WorkflowID string  `json:"workflow_id"`
	RunID      string  `json:"run_id"`
	Trigger    Trigger `json:"trigger,omitempty"`
	// Reason is the cancellation reason, or the failure's message.
	Reason  string  `json:"reason,omitempty"`
	Outcome Outcome `json:"outcome"`
	// Steps are in the order compensations run: the reverse of recording.
	Steps []StepReport `json:"steps"`
}

// StepReport describes one compensation.
type StepReport struct {
	// Step identifies it within the run: "s<seq>" for the activity step it
	// undoes, "a<n>" for the n-th Add. Resolve names it.
	Step string `json:"step"`
	// Activity is the compensated activity; empty for Add.
	Activity string `json:"activity,omitempty"`
	// Undo is the compensation activity.
	Undo string `json:"undo"`
	// Key is the idempotency key given to Undo, once it is known.
	Key    string     `json:"idempotency_key,omitempty"`
	Status StepStatus `json:"status"`
	// Result is Undo's result as JSON (a refund reference, say).
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Note is the operator's note when Resolved.
	Note string `json:"note,omitempty"`
}

// Problem returns, when the report's outcome is OutcomeNeedsOperator, an
// error that matches engine.ErrNeedsOperator (an *engine.ApplicationError of
// type engine.ErrorTypeNeedsOperator whose Details is the failed StepReport
// as JSON); nil otherwise.
func (r Report) Problem() error {
	if r.Outcome != OutcomeNeedsOperator {
		return nil
	}
	for _, s := range r.Steps {
		if s.Status == StepFailed {
			return engine.NewNeedsOperatorError(fmt.Sprintf("cancel: %s needs an operator: compensation %s (%s) failed: %s",
				r.WorkflowID, s.Step, s.Undo, s.Error), s)
		}
	}
	return engine.NewNeedsOperatorError(fmt.Sprintf("cancel: %s needs an operator", r.WorkflowID), nil)
}

// ReportFromEvent returns the Report a ReportActivity checkpoint event
// records (completed, or failed with engine.ErrNeedsOperator), for a
// CheckpointInterceptor that mirrors it into a legacy row. It reports false
// for any other event.
func ReportFromEvent(ev *engine.CheckpointEvent) (Report, bool) {
	if ev == nil || ev.ActivityName != ReportActivity ||
		(ev.Kind != engine.CheckpointActivityCompleted && ev.Kind != engine.CheckpointActivityFailed) {
		return Report{}, false
	}
	switch r := ev.Input.(type) {
	case Report:
		return r, true
	case *Report:
		if r != nil {
			return *r, true
		}
	}
	return Report{}, false
}

// Status returns a run's Report, answered by the run's StatusQuery (so it
// works for loaded, unloaded and closed runs; the workflow type must be
// registered in this process).
func Status(ctx context.Context, c *engine.Client, workflowID string) (Report, error) {
	return engine.QueryAs[Report](ctx, c, workflowID, StatusQuery, nil)
}
