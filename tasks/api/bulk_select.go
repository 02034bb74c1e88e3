package api

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Limits and defaults of bulk requests.
const (
	// DefaultBulkRate is a bulk job's pace when the request names none.
	DefaultBulkRate = 50.0
	// MaxBulkRate bounds the pace a request may ask for.
	MaxBulkRate = 10000.0
	maxBulkIDs  = 10000
	// bulkSampleSize and bulkIneligibleShown bound a preview's lists.
	bulkSampleSize      = 20
	bulkIneligibleShown = 100
)

// bulkSpec is a validated bulk request: what to do to which operations.
type bulkSpec struct {
	Action  BulkAction  `json:"action"`
	Filter  BulkFilter  `json:"filter"`
	Exclude []string    `json:"exclude,omitempty"`
	Signal  *BulkSignal `json:"signal,omitempty"`
	Rate    float64     `json:"rate"`
	Reason  string      `json:"reason"`
	// FromStep: a relaunch re-executes from the first step of this name
	// (empty: from before the last failed activity).
	FromStep string `json:"from_step,omitempty"`
}

// checkBulkRequest validates a request for principal p and returns its spec.
func (s *Server) checkBulkRequest(p Principal, b *BulkRequest) (*bulkSpec, error) {
	if b == nil {
		return nil, badRequest("", "a JSON body is required")
	}
	switch b.Action {
	case BulkActionRelaunch, BulkActionCancel, BulkActionSignal:
	default:
		return nil, badRequest("action", "%q is not relaunch, cancel or signal", b.Action)
	}
	if p.Role == RoleCustomer && b.Action != BulkActionCancel {
		return nil, forbidden("the customer role may not %s operations", b.Action)
	}
	if err := required("reason", b.Reason); err != nil {
		return nil, err
	}
	if b.Filter == nil {
		return nil, badRequest("filter", "is required ({} matches every operation)")
	}
	spec := &bulkSpec{Action: b.Action, Filter: *b.Filter, Reason: b.Reason, Rate: DefaultBulkRate, Signal: b.Signal}
	if b.Rate != nil {
		if err := checkRate(*b.Rate); err != nil {
			return nil, err
		}
		spec.Rate = *b.Rate
	}
	if b.Exclude != nil {
		if len(*b.Exclude) > maxBulkIDs {
			return nil, badRequest("exclude", "names more than %d operations", maxBulkIDs)
		}
		spec.Exclude = *b.Exclude
	}
	if f := b.Filter.Ids; f != nil && len(*f) > maxBulkIDs {
		return nil, badRequest("filter.ids", "names more than %d operations", maxBulkIDs)
	} else if f != nil && len(*f) == 0 {
		return nil, badRequest("filter.ids", "is empty: name at least one operation, or leave ids out to select by the other fields")
	}
	if f := b.Filter.Route; f != nil {
		if err := checkRoute("filter.route", *f); err != nil {
			return nil, err
		}
	}
	if f := b.Filter.Status; f != nil {
		for _, st := range *f {
			if _, err := s.statusCond(st); err != nil {
				return nil, badRequest("filter.status", "%q is not a status", st)
			}
		}
	}
	if b.FromStep != nil {
		if b.Action != BulkActionRelaunch {
			return nil, badRequest("from_step", "is only for the relaunch action")
		}
		if err := required("from_step", *b.FromStep); err != nil {
			return nil, err
		}
		spec.FromStep = *b.FromStep
	}
	switch {
	case b.Action == BulkActionSignal && b.Signal == nil:
		return nil, badRequest("signal", "is required for the signal action (name and payload)")
	case b.Action != BulkActionSignal && b.Signal != nil:
		return nil, badRequest("signal", "is only for the signal action")
	case b.Signal != nil:
		if err := required("signal.name", b.Signal.Name); err != nil {
			return nil, err
		}
		if b.Signal.Payload == nil || len(*b.Signal.Payload) == 0 {
			b.Signal.Payload = ptr(json.RawMessage("null"))
		}
	}
	return spec, nil
}

func checkRate(r float64) error {
	if !(r > 0 && r <= MaxBulkRate) {
		return badRequest("rate", "must be more than 0 and at most %g operations per second", MaxBulkRate)
	}
	return nil
}

// listParams is the bulk filter as the list's.
func (f BulkFilter) listParams() ListOperationsParams {
	lp := ListOperationsParams{Kind: f.Kind, Key: f.Key, Customer: f.Customer, FailingStep: f.FailingStep,
		ErrorType: f.ErrorType, CreatedAfter: f.CreatedAfter, CreatedBefore: f.CreatedBefore}
	if f.Route != nil {
		lp.Route = ptr(ListOperationsParamsRoute(*f.Route))
	}
	return lp
}

// bulkCandidate is one operation a bulk filter matches, with why the action
// does not apply to it (empty when it does).
type bulkCandidate struct {
	ID       string  `db:"workflow_id"`
	RunID    string  `db:"run_id"`
	Kind     string  `db:"workflow_type"`
	Status   string  `db:"status"`
	Customer *string `db:"customer"`
	Why      string  `db:"why"`
}

// bulkSelection is what a bulk spec matches.
type bulkSelection struct {
	items    []bulkCandidate // in the job's order, ineligible ones included
	eligible int
	excluded int
	notFound []string // IDs asked for that match nothing p may see
}

// ineligibleExpr is the SQL reason spec's action does not apply to the
// operation r (NULL when it does); its arguments go to q.
func (s *Server) ineligibleExpr(spec *bulkSpec, q *query) string {
	const open = `r.status IN ('pending','running','waiting')`
	switch spec.Action {
	case BulkActionRelaunch:
		// relaunchCut's question, asked of every operation matched: is
		// there a step to run again from?
		point := `st.kind = 'activity' AND st.status = 'failed'`
		if spec.FromStep != "" {
			point = `st.name = ` + q.arg(spec.FromStep)
		}
		return `CASE WHEN ` + open + ` THEN 'open (' || r.status || '): relaunch a closed operation, cancel it first'
			WHEN r.status = 'completed' THEN 'completed'
			WHEN NOT EXISTS (SELECT 1 FROM ` + s.schema + `.steps st WHERE st.run_id = r.run_id AND ` + point + `)
			THEN ` + q.arg(noRelaunchPoint(spec.FromStep)) + `::text END`
	default:
		return `CASE WHEN NOT ` + open + ` THEN 'already ' || r.status END`
	}
}

// selectBulk finds the operations spec names that p may see, oldest first,
// and says which of them the action applies to.
func (s *Server) selectBulk(ctx context.Context, db sqlx.QueryerContext, p Principal, spec *bulkSpec) (*bulkSelection, error) {
	q, err := s.filter(p, spec.Filter.listParams())
	if err != nil {
		return nil, err
	}
	if err := s.andStatuses(q, spec.Filter.Status); err != nil {
		return nil, err
	}
	if spec.Filter.Ids != nil {
		q.and(`r.workflow_id = ANY(` + q.arg(pq.Array(*spec.Filter.Ids)) + `::text[])`)
	}
	var rows []bulkCandidate
	why := s.ineligibleExpr(spec, q)
	text := `SELECT r.workflow_id, r.run_id, r.workflow_type, r.status, r.headers->>` + s.customerKey + ` AS customer,
		COALESCE(` + why + `, '') AS why` + s.opFrom() + q.sql() + ` ORDER BY r.created_at, r.run_id`
	if err := sqlx.SelectContext(ctx, db, &rows, text, q.args...); err != nil {
		return nil, fmt.Errorf("api: bulk selection: %w", err)
	}
	sel := &bulkSelection{items: rows[:0]}
	exclude := map[string]bool{}
	for _, id := range spec.Exclude {
		exclude[id] = true
	}
	found := map[string]bool{}
	kinds := map[string]string{} // kind -> why a signal does not apply
	for _, r := range rows {
		found[r.ID] = true
		if exclude[r.ID] {
			sel.excluded++
			continue
		}
		if r.Why == "" && spec.Action == BulkActionSignal {
			why, ok := kinds[r.Kind]
			if !ok {
				why = s.signalIneligible(ctx, r.Kind, spec.Signal)
				kinds[r.Kind] = why
			}
			r.Why = why
		}
		if r.Why == "" {
			sel.eligible++
		}
		sel.items = append(sel.items, r)
	}
	if spec.Filter.Ids != nil {
		for _, id := range *spec.Filter.Ids {
			if !found[id] && !exclude[id] {
				found[id] = true
				sel.notFound = append(sel.notFound, id)
			}
		}
	}
	return sel, nil
}

// signalIneligible says why signal sig cannot go to operations of kind
// (empty when it can).
func (s *Server) signalIneligible(ctx context.Context, kind string, sig *BulkSignal) string {
	err := s.checkSignal(ctx, kind, sig.Name, *sig.Payload)
	if err == nil {
		return ""
	}
	field, why := signalRefused(err)
	if field == "payload" {
		return "payload: " + why
	}
	if field == "" {
		return err.Error()
	}
	return why
}

// preview is the dry run's answer for a selection. A relaunch's says of
// each sampled operation what its relaunch would do (relaunchPlans).
func (s *Server) preview(ctx context.Context, sel *bulkSelection, spec *bulkSpec) (*BulkPreview, error) {
	var plans map[string]*BulkRelaunchPlan
	if spec.Action == BulkActionRelaunch {
		var err error
		if plans, err = s.relaunchPlans(ctx, sel, spec.FromStep); err != nil {
			return nil, err
		}
	}
	pv := &BulkPreview{Action: spec.Action, Matched: len(sel.items), Count: sel.eligible, Excluded: sel.excluded,
		Sample: []BulkItemRef{}, Ineligible: []BulkIneligible{}}
	for _, it := range sel.items {
		plan, planned := plans[it.RunID]
		if it.Why == "" && planned && plan == nil {
			// relaunchCut found no step to run again from: the job's reset
			// would fail, so it is not counted.
			it.Why = noRelaunchPoint(spec.FromStep)
			pv.Count--
		}
		if it.Why == "" {
			if len(pv.Sample) < bulkSampleSize && (plans == nil || planned) {
				pv.Sample = append(pv.Sample, BulkItemRef{Id: it.ID, Kind: it.Kind, Status: Status(it.Status), Customer: it.Customer, Relaunch: plan})
			}
			continue
		}
		pv.IneligibleCount++
		if len(pv.Ineligible) < bulkIneligibleShown {
			pv.Ineligible = append(pv.Ineligible, BulkIneligible{Id: it.ID, Why: it.Why})
		}
	}
	for _, id := range sel.notFound {
		pv.IneligibleCount++
		if len(pv.Ineligible) < bulkIneligibleShown {
			pv.Ineligible = append(pv.Ineligible, BulkIneligible{Id: id, Why: "not found"})
		}
	}
	return pv, nil
}

// relaunchPlans says what a relaunch from fromStep would do to the
// operations of sel a preview samples (the first bulkSampleSize eligible
// ones), by their run: as the operation's own relaunch dry run finds it
// (relaunchCut, relaunchSteps), nil when it finds no step to run again
// from. Only their steps are read, in one statement: however large the
// selection (a filter may match every operation), a dry run reads at most
// bulkSampleSize histories; the others were checked for a step to run
// again from by the selection (ineligibleExpr).
func (s *Server) relaunchPlans(ctx context.Context, sel *bulkSelection, fromStep string) (map[string]*BulkRelaunchPlan, error) {
	var runs []string
	for _, it := range sel.items {
		if it.Why == "" && len(runs) < bulkSampleSize {
			runs = append(runs, it.RunID)
		}
	}
	plans := make(map[string]*BulkRelaunchPlan, len(runs))
	if len(runs) == 0 {
		return plans, nil
	}
	steps, err := s.runSteps(ctx, runs...)
	if err != nil {
		return nil, fmt.Errorf("api: bulk preview steps: %w", err)
	}
	for _, run := range runs {
		plans[run] = nil
		if cut := relaunchCut(steps[run], fromStep); cut >= 0 {
			reused, rerun := relaunchSteps(steps[run], cut)
			plans[run] = &BulkRelaunchPlan{FromStep: rerun[0].Name, FromSeq: cut, Reused: len(reused), Rerun: len(rerun)}
		}
	}
	return plans, nil
}
