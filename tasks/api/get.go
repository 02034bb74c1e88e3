package api

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/typeschema"
)

// GetOperation returns one operation: its latest run's state, its legacy
// row, the signals its kind declares, and where it is now.
func (s *Server) GetOperation(ctx context.Context, req GetOperationRequestObject) (GetOperationResponseObject, error) {
	op, err := s.operation(ctx, principalOf(ctx), req.Id)
	if err != nil {
		return nil, err
	}
	return GetOperation200JSONResponse(*op), nil
}

func (s *Server) operation(ctx context.Context, p Principal, id string) (*Operation, error) {
	r, err := s.loadOperation(ctx, p, id)
	if err != nil {
		return nil, err
	}
	var d struct {
		Input        []byte         `db:"input"`
		Output       []byte         `db:"output"`
		CancelAt     sql.NullTime   `db:"cancel_requested_at"`
		CancelReason sql.NullString `db:"cancel_reason"`
		StartReason  string         `db:"start_reason"`
		Runs         int            `db:"runs"`
		Relaunches   int            `db:"relaunches"`
	}
	if err := s.db.GetContext(ctx, &d, `SELECT input, output, cancel_requested_at, cancel_reason, start_reason,
		(SELECT count(*) FROM `+s.schema+`.runs WHERE workflow_id = $2) AS runs,
		(SELECT count(*) FROM `+s.schema+`.runs WHERE workflow_id = $2 AND start_reason = 'reset') AS relaunches
		FROM `+s.schema+`.runs WHERE run_id = $1`, r.RunID, r.WorkflowID); err != nil {
		return nil, fmt.Errorf("api: load operation %s: %w", id, err)
	}
	sum := r.summary()
	op := &Operation{Id: sum.Id, Kind: sum.Kind, Status: sum.Status, Conditions: sum.Conditions, Route: sum.Route,
		Key: sum.Key, Customer: sum.Customer, RunId: sum.RunId, CreatedAt: sum.CreatedAt, RelaunchedAt: sum.RelaunchedAt, UpdatedAt: sum.UpdatedAt,
		ClosedAt: sum.ClosedAt, NextWakeup: sum.NextWakeup, LastError: sum.LastError,
		Input: rawJSON(d.Input), Output: rawJSON(d.Output), Runs: d.Runs, Relaunches: d.Relaunches, StartReason: ptr(d.StartReason)}
	if len(r.Error) > 0 {
		op.Error = errorInfo(r.Error)
	}
	if d.CancelAt.Valid {
		op.CancelRequested = ptr(true)
		if d.CancelReason.Valid {
			op.CancelReason = ptr(d.CancelReason.String)
		}
	}
	if op.Now, err = s.now(ctx, r); err != nil {
		return nil, err
	}
	if err := s.signalDecls(ctx, r.WorkflowType, op); err != nil {
		return nil, err
	}
	if s.cfg.Legacy != nil {
		row, ok, err := s.cfg.Legacy.Row(ctx, r.WorkflowID)
		if err != nil {
			return nil, fmt.Errorf("api: legacy row of %s: %w", id, err)
		}
		if ok {
			op.Legacy = ptr(LegacyRow(row))
		}
	}
	return op, nil
}

// rawJSON returns a stored JSON payload for embedding in a response, nil
// when there is none.
func rawJSON(b []byte) *json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return ptr(json.RawMessage(b))
}

// now summarises where an operation is: the step in flight (the run's
// latest step when it has not ended) with its attempt n of m, the next
// wake-up, what it waits for, and the last error.
func (s *Server) now(ctx context.Context, r *opRow) (NowSummary, error) {
	n := NowSummary{LastError: r.lastError()}
	open := r.Status.IsOpen()
	if !open {
		return n, nil
	}
	var st struct {
		Seq      int    `db:"seq"`
		Kind     string `db:"kind"`
		Name     string `db:"name"`
		Status   string `db:"status"`
		Attempts int    `db:"attempts"`
	}
	err := s.db.GetContext(ctx, &st, `SELECT seq, kind, name, status, attempts FROM `+s.schema+`.steps
		WHERE run_id = $1 ORDER BY seq DESC LIMIT 1`, r.RunID)
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return n, fmt.Errorf("api: current step of %s: %w", r.WorkflowID, err)
	case st.Status == "started" || st.Status == CondRetrying || st.Status == CondThrottled:
		n.CurrentStep, n.CurrentStepSeq = ptr(st.Name), ptr(st.Seq)
		if st.Attempts > 0 {
			n.Attempt = ptr(st.Attempts)
		}
		if st.Kind == "activity" {
			if err := s.nowAttempts(ctx, r, st.Seq, &n); err != nil {
				return n, err
			}
		}
	}
	if r.Status == engine.StatusWaiting && n.WaitingFor == nil {
		if r.WakeAt.Valid {
			n.NextWakeup, n.WaitingFor = ptr(r.WakeAt.Time), ptr("timer")
		} else {
			n.WaitingFor = ptr("event")
		}
	}
	return n, nil
}

// nowAttempts fills in the attempts of the activity step seq that has not
// ended: the one in flight, or the next one while the step waits to retry
// (or was throttled) with when it is due; the maximum its retry policy
// allows; and the error of its latest failed attempt.
func (s *Server) nowAttempts(ctx context.Context, r *opRow, seq int, n *NowSummary) error {
	step, err := s.client.RunStep(ctx, r.RunID, seq)
	if err != nil {
		return fmt.Errorf("api: current step of %s: %w", r.WorkflowID, err)
	}
	attempt, most := step.Attempts, -1
	if !step.NextAttemptAt.IsZero() {
		attempt++ // the one it waits for
		n.NextWakeup = ptr(step.NextAttemptAt)
		n.WaitingFor = ptr("retry")
	}
	if attempt > 0 {
		n.Attempt = ptr(attempt)
	}
	recs := step.AttemptRecords
	if len(recs) > 0 {
		most = recs[len(recs)-1].MaxAttempts
	} else if o, ok := s.cfg.Engine.ActivityOptions(step.Name); ok {
		most = 0
		if o.RetryPolicy != nil {
			most = o.RetryPolicy.MaximumAttempts
		}
	}
	if most >= 0 {
		n.MaxAttempts = ptr(most)
	}
	if step.Status == CondThrottled && len(recs) > 0 {
		n.WaitingFor, n.ThrottleReason = ptr("throttle"), ptr(recs[len(recs)-1].Reason)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		if a := recs[i]; a.Error != nil {
			if n.LastError == nil || n.LastError.At == nil || n.LastError.At.Before(a.EndedAt) {
				e := errorInfoOf(a.Error)
				e.Step, e.At = ptr(step.Name), ptr(a.EndedAt)
				n.LastError = e
			}
			break
		}
	}
	return nil
}

// signalDecls fills in the signals an operator may send an operation of
// kind: those kind declares, when it is registered in this process, or
// else those its workers published (see engine.PublishedSignals); and
// cancel's operator signal, which every run that compensates reads.
func (s *Server) signalDecls(ctx context.Context, kind string, op *Operation) error {
	decls, registered := s.cfg.Engine.WorkflowSignals(kind)
	op.KindRegistered = &registered
	var out []SignalDecl
	add := func(name, description string, schema map[string]any) {
		sd := SignalDecl{Name: name}
		if description != "" {
			sd.Description = ptr(description)
		}
		if schema != nil {
			sd.Schema = &schema
		}
		out = append(out, sd)
	}
	switch {
	case registered:
		op.SignalsSource = ptr(SignalsRegistered)
		for _, d := range decls {
			add(d.Name, d.Description, typeschema.Of(d.Type()))
		}
	default:
		pk, err := s.publishedSignals(ctx, kind)
		if err != nil {
			return fmt.Errorf("api: signals of %s: %w", kind, err)
		}
		if pk == nil {
			op.SignalsSource = ptr(SignalsNone)
			break
		}
		op.SignalsSource = ptr(SignalsPublished)
		op.SignalsPublishedAt = ptr(pk.pub.PublishedAt)
		op.SignalsPublishedBy = ptr(pk.pub.PublishedBy + " (" + pk.pub.Build + ")")
		for _, d := range pk.pub.Signals {
			var sch map[string]any
			if err := json.Unmarshal(d.Schema, &sch); err != nil {
				return fmt.Errorf("api: published schema of signal %s of %s: %w", d.Name, kind, err)
			}
			add(d.Name, d.Description, sch)
		}
	}
	o := operatorSignal()
	add(o.Name, o.Description, typeschema.Of(o.Type()))
	op.Signals = &out
	return nil
}

// operatorSignal is package cancel's signal, read by a run whose
// compensation needs an operator.
func operatorSignal() engine.SignalDecl {
	return engine.DeclareSignal[cancel.OperatorAction](cancel.OperatorSignal,
		"an operator's decision on a failed compensation: retry it, or resolve it as done by hand")
}
