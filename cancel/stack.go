package cancel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/graftdev/graft/engine"
)

type (
	stackKey struct{}
	undoKey  struct{}
)

// stack is one run's compensations, in the order they were recorded. It lives
// in the workflow's goroutine and is rebuilt identically by every replay.
type stack struct {
	i            *Interceptor
	info         engine.WorkflowInfo
	entries      []*entry
	calls        []engine.Future[json.RawMessage] // every activity the workflow scheduled
	added        int                              // Add calls so far, for stable IDs
	compensating bool
	trigger      Trigger
	reason       string
	outcome      Outcome
}

// entry is one recorded compensation.
type entry struct {
	id       string // "s<seq>" for a tracked step, "a<n>" for the n-th Add
	activity string
	comp     *Compensation // nil for Add
	undo     undoer
	args     any                            // the tracked call's input
	result   engine.Future[json.RawMessage] // the tracked call's outcome
	undoIn   any
	opts     *engine.ActivityOptions
	key      string

	status StepStatus
	out    json.RawMessage
	err    string
	note   string
}

func stackOf(ctx engine.Context) *stack {
	st, _ := ctx.Value(stackKey{}).(*stack)
	return st
}

// compensate runs the recorded compensations in reverse order. ctx is
// disconnected: nothing here observes the cancellation.
func (st *stack) compensate(ctx engine.Context, trigger Trigger, reason string) {
	st.compensating, st.trigger, st.reason = true, trigger, reason
	if len(st.entries) == 0 {
		st.outcome = OutcomeCompensated
		return
	}
	engine.Logger(ctx).Info("cancel: compensating", "trigger", trigger, "reason", reason, "steps", len(st.entries))
	st.outcome = OutcomeCompensating
	for _, e := range st.entries {
		e.status = StepPending
	}
	// Let every activity still in flight end first (a cancellation has
	// cancelled their contexts): undoing earlier steps while a later one
	// still runs would break the reverse order.
	for _, f := range st.calls {
		_, _ = f.Get(ctx)
	}
	for n := len(st.entries) - 1; n >= 0; n-- {
		st.run(ctx, st.entries[n])
	}
	st.record(ctx, OutcomeCompensated)
}

// run compensates one entry, waiting for an operator as often as it fails.
func (st *stack) run(ctx engine.Context, e *entry) {
	var prepErr error
	if e.comp != nil {
		// The step may still be in flight (cancelled, or not, by now): its
		// outcome decides whether there is anything to undo.
		raw, err := e.result.Get(ctx)
		if err != nil {
			e.status, e.err = StepNotNeeded, err.Error()
			return
		}
		e.undoIn, prepErr = e.comp.input(e.args, raw)
	}
	if prepErr == nil {
		e.key, prepErr = st.keyFor(e)
	}
	opts := e.opts
	if opts == nil {
		o := st.i.opts
		opts = &o
	}
	for {
		err := prepErr
		if err == nil {
			e.out, err = e.undo.run(engine.WithValue(ctx, undoKey{}, e.key), opts, e.undoIn)
		}
		if err == nil {
			e.status, e.err = StepCompensated, ""
			return
		}
		e.status, e.err = StepFailed, err.Error()
		engine.Logger(ctx).Error("cancel: compensation failed; the operation needs an operator",
			"step", e.id, "undo", e.undo.name, "err", err)
		st.record(ctx, OutcomeNeedsOperator)
		act := st.waitForOperator(ctx, e)
		st.outcome = OutcomeCompensating
		if act.Action == ActionResolve {
			e.status, e.err, e.note = StepResolved, "", act.Note
			return
		}
		e.status = StepPending
	}
}

// keyFor derives the compensation's idempotency key from the operation, the
// compensated step and the compensation's input.
func (st *stack) keyFor(e *entry) (string, error) {
	b, err := json.Marshal(e.undoIn)
	if err != nil {
		return "", fmt.Errorf("cancel: encode input of %q: %w", e.undo.name, err)
	}
	h := sha256.New()
	h.Write([]byte(e.undo.name))
	h.Write([]byte{0})
	h.Write(b)
	return fmt.Sprintf("%s/cancel/%s/%s", st.info.WorkflowID, e.id, hex.EncodeToString(h.Sum(nil)[:8])), nil
}

// waitForOperator blocks, durably, until an operator retries the failed
// compensation or resolves it by hand.
func (st *stack) waitForOperator(ctx engine.Context, e *entry) OperatorAction {
	ch := engine.GetSignalChannel[OperatorAction](ctx, OperatorSignal)
	for {
		act, err := ch.Receive(ctx)
		switch {
		case err != nil:
			engine.Logger(ctx).Warn("cancel: ignoring an undecodable operator signal", "err", err)
		case act.Action == ActionRetry && (act.Step == "" || act.Step == e.id):
			return act
		case act.Action == ActionResolve && act.Step == e.id:
			return act
		default:
			engine.Logger(ctx).Warn("cancel: ignoring an operator action for another step", "action", act.Action,
				"step", act.Step, "waiting_step", e.id)
		}
	}
}

// record moves the run to outcome and runs ReportActivity with the report,
// so the state is in the run's history and in a checkpoint event a mirror
// can map. The outcome changes only once the report is recorded, so Status
// (answered by replay) never runs ahead of the mirror.
func (st *stack) record(ctx engine.Context, outcome Outcome) {
	r := st.snapshot()
	r.Outcome = outcome
	_, err := st.i.report.Run(ctx, r)
	if err != nil && !(outcome == OutcomeNeedsOperator && errors.Is(err, engine.ErrNeedsOperator)) {
		engine.Logger(ctx).Error("cancel: could not record the compensation report (is Interceptor.Register called?)",
			"err", err)
	}
	st.outcome = outcome
}

// reportStep is ReportActivity. A report that needs an operator fails the
// step with Report.Problem, an engine.ErrNeedsOperator mirrors understand;
// any other report completes it. Either way the step's checkpoint event
// carries the report as its Input.
func reportStep(_ context.Context, r Report) (struct{}, error) {
	return struct{}{}, r.Problem()
}

// snapshot is the run's Report, compensations in the order they run.
func (st *stack) snapshot() Report {
	r := Report{WorkflowID: st.info.WorkflowID, RunID: st.info.RunID, Trigger: st.trigger, Reason: st.reason,
		Outcome: st.outcome, Steps: make([]StepReport, 0, len(st.entries))}
	for n := len(st.entries) - 1; n >= 0; n-- {
		e := st.entries[n]
		r.Steps = append(r.Steps, StepReport{Step: e.id, Activity: e.activity, Undo: e.undo.name, Key: e.key,
			Status: e.status, Result: e.out, Error: e.err, Note: e.note})
	}
	return r
}
