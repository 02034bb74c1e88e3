package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks"
)

// GetOperationHistory returns one timeline of an operation: each run's
// start and end, each step with its outcome, cancellation requests, the
// flag decision that routed it to graft (when intake claimed it), and the
// actions operators took through the API, oldest first.
func (s *Server) GetOperationHistory(ctx context.Context, req GetOperationHistoryRequestObject) (GetOperationHistoryResponseObject, error) {
	if _, err := s.loadOperation(ctx, principalOf(ctx), req.Id); err != nil {
		return nil, err
	}
	runs, err := s.client.History(ctx, req.Id)
	if errors.Is(err, engine.ErrNotFound) {
		return nil, notFound("operation " + quote(req.Id))
	}
	if err != nil {
		return nil, err
	}
	// The flag decision comes first: it committed with its run's start.
	ev, err := s.flagDecisions(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	// A relaunch's run starts with the records it reuses, copied with
	// their times: the earlier run already shows them, so they are not
	// shown again (as if the step had run twice).
	type stepAt struct {
		seq int
		at  time.Time
	}
	ran := map[stepAt]bool{} // the steps each run recorded itself
	for _, rh := range runs {
		for _, st := range rh.Steps {
			if !st.CompletedAt.Before(rh.Run.CreatedAt) {
				ran[stepAt{st.Seq, st.CompletedAt}] = true
			}
		}
	}
	for _, rh := range runs {
		run := rh.Run
		runID := ptr(run.RunID)
		for i := range ev {
			if ev[i].Type == "flag_decision" && *ev[i].RunId == run.RunID {
				ev[i].At = run.CreatedAt
			}
		}
		detail, _ := json.Marshal(map[string]string{"start_reason": run.StartReason, "previous_run_id": run.PreviousRunID})
		// No status: run.Status is the run's now (its end, once closed),
		// not what it was when it started; run_closed carries the end's.
		ev = append(ev, HistoryEvent{At: run.CreatedAt, Type: "run_started", RunId: runID, Name: ptr(run.WorkflowType),
			Detail: ptr(json.RawMessage(detail))})
		for _, st := range rh.Steps {
			if st.CompletedAt.Before(run.CreatedAt) && ran[stepAt{st.Seq, st.CompletedAt}] {
				continue
			}
			at := st.StartedAt
			if at.IsZero() {
				at = st.CompletedAt
			}
			if at.IsZero() {
				at = run.CreatedAt
			}
			e := HistoryEvent{At: at, Type: "step", RunId: runID, Seq: ptr(st.Seq), Kind: ptr(st.Kind), Name: ptr(st.Name),
				Status: ptr(st.Status), Error: errorInfoOf(st.Error)}
			if st.Attempts > 0 {
				e.Attempt = ptr(st.Attempts)
			}
			if !st.CompletedAt.IsZero() {
				e.EndedAt = ptr(st.CompletedAt)
			}
			if st.Kind == "child" && st.ChildWorkflowID != "" {
				d, _ := json.Marshal(map[string]string{"child_workflow_id": st.ChildWorkflowID})
				e.Detail = ptr(json.RawMessage(d))
			}
			if !st.NextAttemptAt.IsZero() {
				d, _ := json.Marshal(map[string]time.Time{"next_attempt_at": st.NextAttemptAt})
				e.Detail = ptr(json.RawMessage(d))
			}
			ev = append(ev, e)
			ev = append(ev, attemptEvents(runID, st)...)
		}
		if !run.ClosedAt.IsZero() {
			ev = append(ev, HistoryEvent{At: run.ClosedAt, Type: "run_closed", RunId: runID, Status: ptr(string(run.Status)),
				Error: errorInfoOf(run.Error)})
		}
	}
	audit, err := s.auditOf(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	for _, a := range audit {
		e := HistoryEvent{At: a.At, Type: "action", Name: ptr(a.Action), Actor: ptr(a.Actor), Reason: a.Reason}
		if len(a.Detail) > 0 {
			e.Detail = ptr(json.RawMessage(a.Detail))
		}
		ev = append(ev, e)
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At.Before(ev[j].At) })
	return GetOperationHistory200JSONResponse{Id: req.Id, Events: ev}, nil
}

// attemptEvents are one event per attempt (and snooze) of an activity
// step that was tried more than once, lost an attempt with its worker, was
// snoozed or waits to retry; a step with one plain attempt has its step
// event only.
func attemptEvents(runID *string, st engine.StepInfo) []HistoryEvent {
	recs := st.AttemptRecords
	if len(recs) == 0 || (len(recs) == 1 && !recs[0].Lost && !recs[0].Snoozed && st.NextAttemptAt.IsZero()) {
		return nil
	}
	out := make([]HistoryEvent, 0, len(recs))
	for _, a := range recs {
		e := HistoryEvent{At: a.StartedAt, Type: "attempt", RunId: runID, Seq: ptr(st.Seq), Kind: ptr(st.Kind), Name: ptr(st.Name),
			Attempt: ptr(a.Attempt), Error: errorInfoOf(a.Error)}
		switch {
		case a.Snoozed:
			e.Status, e.Reason = ptr("snoozed"), ptr(a.Reason)
		case a.Lost:
			e.Status = ptr("lost")
		case a.Error != nil:
			e.Status = ptr("failed")
		case a.EndedAt.IsZero():
			e.Status = ptr("started")
		default:
			e.Status = ptr("completed")
		}
		if !a.EndedAt.IsZero() {
			e.EndedAt = ptr(a.EndedAt)
		}
		d := map[string]any{}
		if !a.NextAttemptAt.IsZero() {
			d["next_attempt_at"] = a.NextAttemptAt
		}
		if a.Snoozes > 1 {
			d["snoozes"] = a.Snoozes
		}
		if a.MaxAttempts > 0 {
			d["max_attempts"] = a.MaxAttempts
		}
		if len(d) > 0 {
			b, _ := json.Marshal(d)
			e.Detail = ptr(json.RawMessage(b))
		}
		out = append(out, e)
	}
	return out
}

// errorInfoOf describes an error the engine decoded from its record.
func errorInfoOf(err error) *ErrorInfo {
	if err == nil {
		return nil
	}
	e := &ErrorInfo{Message: err.Error()}
	var (
		app *engine.ApplicationError
		to  *engine.TimeoutError
		ca  *engine.CanceledError
	)
	switch {
	case errors.As(err, &app):
		e.Kind, e.Message = ptr("application"), app.Message
		if app.Type != "" {
			e.Type = ptr(app.Type)
		}
		if app.NonRetryable {
			e.NonRetryable = ptr(true)
		}
	case errors.As(err, &to):
		e.Kind, e.Type = ptr("timeout"), ptr(string(to.Kind))
	case errors.As(err, &ca):
		e.Kind = ptr("canceled")
	}
	return e
}

// flagDecisions returns the decisions intake recorded when it claimed
// operation id (tasks' intake_claims), as flag_decision events: the route,
// the rule that decided, the bucket, the flag set's version, the routing
// key and the source. A deployment without intake's tables has none.
func (s *Server) flagDecisions(ctx context.Context, id string) ([]HistoryEvent, error) {
	var present bool
	if err := s.db.GetContext(ctx, &present, `SELECT to_regclass($1) IS NOT NULL`, s.schema+".intake_claims"); err != nil {
		return nil, fmt.Errorf("api: flag decisions of %s: %w", id, err)
	}
	if !present {
		return nil, nil
	}
	var rows []struct {
		Source       string    `db:"source"`
		Kind         string    `db:"kind"`
		Key          string    `db:"routing_key"`
		Rule         string    `db:"rule"`
		Bucket       int       `db:"bucket"`
		FlagsVersion int64     `db:"flags_version"`
		RunID        string    `db:"run_id"`
		At           time.Time `db:"claimed_at"`
	}
	if err := s.db.SelectContext(ctx, &rows, `SELECT source, kind, routing_key, rule, bucket, flags_version, run_id, claimed_at
		FROM `+s.schema+`.intake_claims WHERE operation_id = $1 ORDER BY claimed_at`, id); err != nil {
		return nil, fmt.Errorf("api: flag decisions of %s: %w", id, err)
	}
	out := make([]HistoryEvent, 0, len(rows))
	for _, r := range rows {
		d, _ := json.Marshal(map[string]any{"route": tasks.RouteGraft, "rule": r.Rule, "bucket": r.Bucket,
			"flags_version": r.FlagsVersion, "routing_key": r.Key, "source": r.Source})
		out = append(out, HistoryEvent{At: r.At, Type: "flag_decision", RunId: ptr(r.RunID), Name: ptr(r.Kind),
			Status: ptr(string(tasks.RouteGraft)), Detail: ptr(json.RawMessage(d))})
	}
	return out, nil
}
