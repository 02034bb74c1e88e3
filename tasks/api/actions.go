package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/lib/pq"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

func required(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return badRequest(field, "is required")
	}
	return nil
}

func isOpen(status Status) bool {
	return status == StatusPending || status == StatusRunning || status == StatusWaiting
}

// StartOperation starts a workflow for legacy code that calls out instead
// of inserting a row. The customer and key become run headers.
func (s *Server) StartOperation(ctx context.Context, req StartOperationRequestObject) (StartOperationResponseObject, error) {
	b := req.Body
	if err := required("kind", b.Kind); err != nil {
		return nil, err
	}
	if len(b.Input) == 0 {
		return nil, badRequest("input", "is required (null for a workflow without input)")
	}
	p := principalOf(ctx)
	opts := &engine.StartOptions{Headers: engine.Headers{}}
	if b.Id != nil {
		if err := required("id", *b.Id); err != nil {
			return nil, err
		}
		opts.ID = *b.Id
	}
	if b.Customer != nil {
		opts.Headers[s.cfg.CustomerHeader] = *b.Customer
	}
	if b.Key != nil {
		opts.Headers[s.cfg.KeyHeader] = *b.Key
	}
	h, err := s.client.StartByName(ctx, b.Kind, b.Input, opts)
	if err != nil {
		return nil, err
	}
	if err := s.audit(ctx, s.db, p, "start", h.WorkflowID, deref(b.Reason), map[string]string{"kind": b.Kind, "run_id": h.RunID}); err != nil {
		return nil, err
	}
	op, err := s.operation(ctx, p, h.WorkflowID)
	if err != nil {
		return nil, err
	}
	return StartOperation201JSONResponse(*op), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// openOperation loads operation id for an action that needs it open.
func (s *Server) openOperation(ctx context.Context, p Principal, id, action string) (*opRow, error) {
	r, err := s.loadOperation(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if !isOpen(Status(r.Status)) {
		return nil, conflict("operation %q is %s; only an open operation can %s", id, r.Status, action)
	}
	return r, nil
}

// CancelOperation requests the cancellation of an open operation and
// returns its refund plan: the compensations that will run, in order. With
// dry_run it returns the plan and changes nothing.
func (s *Server) CancelOperation(ctx context.Context, req CancelOperationRequestObject) (CancelOperationResponseObject, error) {
	if err := required("reason", req.Body.Reason); err != nil {
		return nil, err
	}
	res, err := s.cancel(ctx, principalOf(ctx), req.Id, req.Body.Reason, req.Body.DryRun != nil && *req.Body.DryRun)
	if err != nil {
		return nil, err
	}
	return CancelOperation200JSONResponse(*res), nil
}

func (s *Server) cancel(ctx context.Context, p Principal, id, reason string, dryRun bool) (*CancelResult, error) {
	r, err := s.openOperation(ctx, p, id, "be cancelled")
	if err != nil {
		return nil, err
	}
	res := &CancelResult{Id: id}
	if err := s.refundPlan(ctx, r, res); err != nil {
		return nil, err
	}
	if dryRun {
		res.DryRun = ptr(true)
		res.Status = Status(r.Status)
		return res, nil
	}
	if err := s.client.Cancel(ctx, id, reason); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, s.db, p, "cancel", id, reason, map[string]any{"run_id": r.RunID, "refund_plan": res.RefundPlan}); err != nil {
		return nil, err
	}
	after, err := s.loadOperation(ctx, p, id)
	if err != nil {
		return nil, err
	}
	res.Status = Status(after.Status)
	return res, nil
}

// refundPlan fills res with the run's compensations, in the order they would
// run, each with where its compensated step stands: completed (it will be
// undone), running (possibly done: undone only if it succeeded), failed.
func (s *Server) refundPlan(ctx context.Context, r *opRow, res *CancelResult) error {
	plan, perr := cancel.Status(ctx, s.client, r.WorkflowID)
	if errors.Is(perr, engine.ErrUnknownWorkflow) {
		res.RefundPlanError = ptr(fmt.Sprintf("the kind %q is not registered in this server, so its refund plan cannot be read (the cancellation itself is not affected)", r.WorkflowType))
		return nil
	}
	if perr != nil {
		res.RefundPlanError = ptr(perr.Error())
		return nil
	}
	var steps []struct {
		Seq    int    `db:"seq"`
		Name   string `db:"name"`
		Status string `db:"status"`
	}
	if err := s.db.SelectContext(ctx, &steps, `SELECT seq, name, status FROM `+s.schema+`.steps WHERE run_id = $1 AND kind = 'activity'`, r.RunID); err != nil {
		return fmt.Errorf("api: steps of %s: %w", r.WorkflowID, err)
	}
	bySeq := map[string]int{}
	for i, st := range steps {
		bySeq[fmt.Sprintf("s%d", st.Seq)] = i
	}
	out := make([]Compensation, 0, len(plan.Steps))
	for _, st := range plan.Steps {
		c := Compensation{Step: st.Step, Undo: st.Undo, Status: string(st.Status)}
		if st.Activity != "" {
			c.Activity = ptr(st.Activity)
		}
		if i, ok := bySeq[st.Step]; ok {
			c.StepName, c.StepStatus = ptr(steps[i].Name), ptr(steps[i].Status)
		}
		out = append(out, c)
	}
	res.RefundPlan = &out
	return nil
}

// RelaunchOperation starts a closed operation again from before its last
// failed activity, or from the first step of a name, reusing the record of
// the steps before that point (engine reset). An open operation is a 409:
// cancel it first. Relaunches of one operation are serialised, so two at
// once make one new run, not two.
func (s *Server) RelaunchOperation(ctx context.Context, req RelaunchOperationRequestObject) (RelaunchOperationResponseObject, error) {
	b := req.Body
	if err := required("reason", b.Reason); err != nil {
		return nil, err
	}
	if b.FromStep != nil {
		if err := required("from_step", *b.FromStep); err != nil {
			return nil, err
		}
	}
	res, err := s.relaunch(ctx, principalOf(ctx), req.Id, deref(b.FromStep), b.Reason, b.DryRun != nil && *b.DryRun)
	if err != nil {
		return nil, err
	}
	return RelaunchOperation200JSONResponse(*res), nil
}

func (s *Server) relaunch(ctx context.Context, p Principal, id, fromStep, reason string, dryRun bool) (*RelaunchResult, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if err := relaunchLock(ctx, tx, id); err != nil {
		return nil, err
	}
	r, err := s.loadOperation(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if isOpen(Status(r.Status)) {
		return nil, conflict("operation %q is %s; relaunch a closed operation (cancel it first)", id, r.Status)
	}
	byRun, err := s.runSteps(ctx, r.RunID)
	if err != nil {
		return nil, fmt.Errorf("api: steps of %s: %w", id, err)
	}
	steps := byRun[r.RunID]
	cut := relaunchCut(steps, fromStep)
	if cut < 0 {
		if fromStep != "" {
			return nil, badRequest("from_step", "the operation's latest run has no step named %q%s", fromStep, stepNames(steps))
		}
		return nil, &problemError{status: http.StatusConflict, kind: noFailedStepKind, title: "Conflict", field: "from_step",
			detail: fmt.Sprintf("operation %q has no failed activity to relaunch before; name the step to relaunch from%s", id, stepNames(steps))}
	}
	res := &RelaunchResult{Id: id, DryRun: dryRun}
	res.Reused, res.Rerun = relaunchSteps(steps, cut)
	if dryRun {
		return res, nil
	}
	h2, err := s.client.Reset(ctx, id, engine.ResetOptions{BeforeSeq: cut, Reason: reason})
	if err != nil {
		return nil, err
	}
	res.RunId = ptr(h2.RunID)
	if err := s.audit(ctx, tx, p, "relaunch", id, reason, map[string]any{"from_seq": cut, "previous_run_id": r.RunID, "run_id": h2.RunID}); err != nil {
		return nil, err
	}
	return res, tx.Commit()
}

// SignalOperation sends a signal the operation's kind declares, after
// checking its payload against the declared type.
func (s *Server) SignalOperation(ctx context.Context, req SignalOperationRequestObject) (SignalOperationResponseObject, error) {
	b := req.Body
	if err := required("name", b.Name); err != nil {
		return nil, err
	}
	if err := required("reason", b.Reason); err != nil {
		return nil, err
	}
	payload := json.RawMessage("null")
	if b.Payload != nil {
		payload = *b.Payload
	}
	if err := s.signal(ctx, principalOf(ctx), req.Id, b.Name, payload, b.Reason); err != nil {
		return nil, err
	}
	return SignalOperation202JSONResponse{Id: req.Id, Action: "signal"}, nil
}

func (s *Server) signal(ctx context.Context, p Principal, id, name string, payload json.RawMessage, reason string) error {
	r, err := s.openOperation(ctx, p, id, "take signals")
	if err != nil {
		return err
	}
	if err := s.checkSignal(ctx, r.WorkflowType, name, payload); err != nil {
		if field, why := signalRefused(err); field != "" {
			return badRequest(field, "%s", why)
		}
		return err
	}
	if err := s.client.Signal(ctx, id, name, payload); err != nil {
		return err
	}
	return s.audit(ctx, s.db, p, "signal", id, reason, map[string]any{"name": name, "payload": payload})
}

// stepRow is one step of a run, as a relaunch reads it.
type stepRow struct {
	RunID  string `db:"run_id"`
	Seq    int    `db:"seq"`
	Kind   string `db:"kind"`
	Name   string `db:"name"`
	Status string `db:"status"`
}

// runSteps reads the steps of the given runs, each run's in seq order.
func (s *Server) runSteps(ctx context.Context, runIDs ...string) (map[string][]stepRow, error) {
	var rows []stepRow
	if err := s.db.SelectContext(ctx, &rows, `SELECT run_id, seq, kind, name, status FROM `+s.schema+`.steps
		WHERE run_id = ANY($1::text[]) ORDER BY run_id, seq`, pq.Array(runIDs)); err != nil {
		return nil, err
	}
	out := make(map[string][]stepRow, len(runIDs))
	for _, r := range rows {
		out[r.RunID] = append(out[r.RunID], r)
	}
	return out, nil
}

// relaunchCut is the step a relaunch of a run with these steps (in seq
// order) runs again from, as the engine's reset finds it (ResetOptions'
// BeforeStep, BeforeLastFailedActivity): the first step named fromStep,
// or without one the last failed activity; -1 when there is none. The
// bulk selection asks the same of every operation it matches, in SQL
// (ineligibleExpr), and its preview this of the ones it shows.
func relaunchCut(steps []stepRow, fromStep string) int {
	cut := -1
	for _, st := range steps {
		if fromStep != "" && st.Name == fromStep {
			return st.Seq
		}
		if fromStep == "" && st.Kind == "activity" && st.Status == "failed" {
			cut = st.Seq
		}
	}
	return cut
}

// relaunchSteps splits steps at cut (relaunchCut) into those a relaunch
// reuses the record of and those it runs again.
func relaunchSteps(steps []stepRow, cut int) (reused, rerun []StepRef) {
	reused, rerun = []StepRef{}, []StepRef{}
	for _, st := range steps {
		ref := StepRef{Seq: st.Seq, Kind: st.Kind, Name: st.Name, Status: ptr(st.Status)}
		if st.Seq < cut {
			reused = append(reused, ref)
			continue
		}
		// The engine's reset gives the new run every signal of the old
		// one; a received one past the cut is received again, with its
		// payload, rather than waited for.
		if st.Kind == "signal" && st.Status == "completed" {
			ref.Redelivered = ptr(true)
		}
		rerun = append(rerun, ref)
	}
	return reused, rerun
}

// noRelaunchPoint is why a bulk relaunch skips an operation whose latest
// run has no step to run again from (relaunchCut is -1).
func noRelaunchPoint(fromStep string) string {
	if fromStep != "" {
		return fmt.Sprintf("no step named %q", fromStep)
	}
	return "no failed activity to relaunch before"
}

// stepNames lists a run's step names, each once, for an error that asks
// for one: " (its steps: render, charge, approve)", or "" without steps.
func stepNames(steps []stepRow) string {
	var names []string
	for _, st := range steps {
		if !slices.Contains(names, st.Name) {
			names = append(names, st.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (its steps: " + strings.Join(names, ", ") + ")"
}
