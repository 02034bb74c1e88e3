package api

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// Conditions an open operation can be in, beyond its engine status.
const (
	// CondWaitingSignal: unloaded, waiting for an event (a signal, a child's
	// end, a cancellation) with no timer due.
	CondWaitingSignal = "waiting_signal"
	// CondNeedsOperator: a compensation exhausted its retries and the run
	// waits for an operator's retry or resolve (package cancel), or the
	// engine parked the run for an operator (it failed with an
	// engine.ErrorTypeNeedsOperator error; a reset resumes it).
	CondNeedsOperator = "needs_operator"
	// CondRetrying: an activity of the run waits for its next attempt
	// after a failure (its step's status is retrying).
	CondRetrying = "retrying"
	// CondThrottled: an activity of the run was snoozed by a provider's
	// limit and waits for its next try (its step's status is throttled).
	CondThrottled = "throttled"
)

// Page sizes of ListOperations.
const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// opRow is an operation as the list and get queries read it: the latest
// run of a workflow ID, with its latest failed step and compensation state.
type opRow struct {
	RunID        string         `db:"run_id"`
	WorkflowID   string         `db:"workflow_id"`
	WorkflowType string         `db:"workflow_type"`
	Status       engine.Status  `db:"status"`
	Error        []byte         `db:"error"`
	Customer     sql.NullString `db:"customer"`
	Key          sql.NullString `db:"key"`
	CreatedAt    time.Time      `db:"created_at"` // the latest run's: the list's order and cursor
	// FirstCreatedAt is the operation's creation (its first run's start),
	// RelaunchedAt its latest relaunch's (NULL: never relaunched).
	FirstCreatedAt time.Time      `db:"first_created_at"`
	RelaunchedAt   sql.NullTime   `db:"relaunched_at"`
	UpdatedAt      time.Time      `db:"updated_at"`
	ClosedAt       sql.NullTime   `db:"closed_at"`
	WakeAt         sql.NullTime   `db:"wake_at"`
	FailedStep     sql.NullString `db:"failed_step"`
	FailedSeq      sql.NullInt64  `db:"failed_seq"`
	FailedError    []byte         `db:"failed_error"`
	FailedAt       sql.NullTime   `db:"failed_at"`
	WaitingSig     bool           `db:"waiting_signal"`
	NeedsOp        bool           `db:"needs_operator"`
	Retrying       bool           `db:"retrying"`
	Throttled      bool           `db:"throttled"`
}

// latestRuns is the condition that run r is an operation: the latest run
// of its workflow ID (the engine marks the earlier ones superseded), a
// top-level user workflow. The engine's runs_latest_by_status index holds
// the runs of its first two terms, with the columns the list counts on.
const latestRuns = `r.parent_run_id IS NULL AND NOT r.superseded AND r.workflow_type NOT LIKE 'graft.%' AND r.status NOT IN ('continued', 'reset')`

// failedStepJoin joins fs, the run's latest failed step.
func (s *Server) failedStepJoin() string {
	return `
	LEFT JOIN LATERAL (SELECT st.name, st.seq, st.error, st.completed_at FROM ` + s.schema + `.steps st
		WHERE st.run_id = r.run_id AND st.status = 'failed' ORDER BY st.seq DESC LIMIT 1) fs ON true`
}

// reportJoin joins rp, the run's latest compensation report.
func (s *Server) reportJoin() string {
	return `
	LEFT JOIN LATERAL (SELECT st.status FROM ` + s.schema + `.steps st
		WHERE st.run_id = r.run_id AND st.name = ` + pq.QuoteLiteral(cancel.ReportActivity) + ` ORDER BY st.seq DESC LIMIT 1) rp ON true`
}

// opFrom is the FROM clause of the queries that read operations: the
// latest runs of top-level user workflows, with the laterals the derived
// columns need.
func (s *Server) opFrom() string {
	return ` FROM ` + s.schema + `.runs r` + s.failedStepJoin() + s.reportJoin() + `
	WHERE ` + latestRuns
}

// keysFrom is opFrom for the runs matching q, for their keys or a count:
// with fs and rp only when the conditions read them, so that a count or a
// page's keys under a filter on kind, time and status reads the
// runs_latest_by_status index alone.
func (s *Server) keysFrom(q *query) string {
	from := ` FROM ` + s.schema + `.runs r`
	if q.failedStep {
		from += s.failedStepJoin()
	}
	if q.report {
		from += s.reportJoin()
	}
	return from + `
	WHERE ` + latestRuns
}

const (
	waitingSignalExpr = `(r.status = 'waiting' AND r.wake_at IS NULL)`
	// reportFailedExpr: an open run whose latest compensation report
	// failed (rp: reportJoin).
	reportFailedExpr = `(r.status IN ('pending','running','waiting') AND rp.status IS NOT DISTINCT FROM 'failed')`
	// parkedExpr: a run the engine parked for an operator, failed with an
	// engine.ErrorTypeNeedsOperator error (the runs_parked_for_operator
	// index holds them).
	parkedExpr = `(r.status = 'failed' AND (r.error->>'type') = '` + engine.ErrorTypeNeedsOperator + `')`
	// needsOperatorExpr: an operation that waits for a person, either way.
	needsOperatorExpr = `(` + reportFailedExpr + ` OR ` + parkedExpr + `)`
)

// failedReportsSQL selects the run IDs with a failed compensation report
// (through the steps_failed_by_name index: the failure path's steps only).
func (s *Server) failedReportsSQL() string {
	return `SELECT f.run_id FROM ` + s.schema + `.steps f
		WHERE f.name = ` + pq.QuoteLiteral(cancel.ReportActivity) + ` AND f.error IS NOT NULL AND f.status = 'failed'`
}

// waitingStepExpr is the condition that an open run (a pending one too: a
// worker's claim leaves a new run's status pending until its first lease
// renewal, see engine's store.claimSQL) has an activity step
// waiting for its next attempt in the given step status (retrying or
// throttled). Such steps are few, and the steps_waiting index (partial,
// on next_attempt_at) holds only them: a filter on it reads them, not
// every run.
func (s *Server) waitingStepExpr(status string) string {
	return `(r.status IN ('pending','running','waiting') AND r.run_id IN (SELECT w.run_id FROM ` + s.schema + `.steps w
		WHERE w.next_attempt_at IS NOT NULL AND w.status = ` + pq.QuoteLiteral(status) + `))`
}

// reportedStatus is an operation's status as the engine reports it: a
// worker's claim leaves a new or woken run's row pending or waiting, and
// leases it until claimed_until, until its first lease renewal marks it
// running (a heap-only update, see engine's store.claimSQL); such a run is
// running. Filters on the status read the row's, through its index.
const reportedStatus = `CASE WHEN r.status IN ('pending','waiting') AND r.claimed_until IS NOT NULL THEN 'running' ELSE r.status END`

// opColumns selects an opRow.
func (s *Server) opColumns() string { return `SELECT ` + s.opColumnList() }

// opColumnList is the columns of an opRow.
func (s *Server) opColumnList() string {
	return `r.run_id, r.workflow_id, r.workflow_type, ` + reportedStatus + ` AS status, r.error,
	r.headers->>` + s.customerKey + ` AS customer, r.headers->>` + s.keyKey + ` AS key, r.created_at, r.updated_at, r.closed_at, r.wake_at,
	fs.name AS failed_step, fs.seq AS failed_seq, fs.error AS failed_error, fs.completed_at AS failed_at,
	` + waitingSignalExpr + ` AS waiting_signal, ` + needsOperatorExpr + ` AS needs_operator,
	` + s.hasWaitingStep(CondRetrying) + ` AS retrying, ` + s.hasWaitingStep(CondThrottled) + ` AS throttled,
	(SELECT min(h.created_at) FROM ` + s.schema + `.runs h WHERE h.workflow_id = r.workflow_id) AS first_created_at,
	(SELECT max(h.created_at) FROM ` + s.schema + `.runs h WHERE h.workflow_id = r.workflow_id AND h.start_reason = 'reset') AS relaunched_at`
}

// hasWaitingStep is waitingStepExpr for one row: a probe of the
// steps_waiting index by run.
func (s *Server) hasWaitingStep(status string) string {
	return `(r.status IN ('pending','running','waiting') AND EXISTS (SELECT 1 FROM ` + s.schema + `.steps w
		WHERE w.run_id = r.run_id AND w.next_attempt_at IS NOT NULL AND w.status = ` + pq.QuoteLiteral(status) + `))`
}

// query accumulates a WHERE clause and its arguments.
type query struct {
	where []string
	args  []any
	// failedStep and report: the conditions read fs (failedStepJoin), rp
	// (reportJoin).
	failedStep, report bool
}

func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

func (q *query) and(cond string) { q.where = append(q.where, cond) }

func (q *query) sql() string {
	if len(q.where) == 0 {
		return ""
	}
	return " AND " + strings.Join(q.where, " AND ")
}

// filter builds the conditions of a list request, status aside (counts are
// per status). A customer principal is always limited to its own.
func (s *Server) filter(p Principal, f ListOperationsParams) (*query, error) {
	q := &query{}
	if p.Role == RoleCustomer {
		q.and(`r.headers->>` + s.customerKey + ` = ` + q.arg(p.Customer))
	}
	if f.Kind != nil {
		q.and(`r.workflow_type = ` + q.arg(*f.Kind))
	}
	if f.Key != nil {
		q.and(`r.headers->>` + s.keyKey + ` = ` + q.arg(*f.Key))
	}
	if f.Customer != nil {
		q.and(`r.headers->>` + s.customerKey + ` = ` + q.arg(*f.Customer))
	}
	if f.Route != nil {
		if err := checkRoute("route", Route(*f.Route)); err != nil {
			return nil, err
		}
	}
	if f.FailingStep != nil {
		q.failedStep = true
		q.and(`fs.name = ` + q.arg(*f.FailingStep))
	}
	if f.ErrorType != nil {
		q.failedStep = true
		a := q.arg(*f.ErrorType)
		q.and(`(r.error->>'type' = ` + a + ` OR (r.error IS NULL AND fs.error->>'type' = ` + a + `))`)
	}
	if f.CreatedAfter != nil {
		q.and(`r.created_at >= ` + q.arg(*f.CreatedAfter))
	}
	if f.CreatedBefore != nil {
		q.and(`r.created_at < ` + q.arg(*f.CreatedBefore))
	}
	return q, nil
}

// checkRoute refuses a route filter other than graft: the operations listed
// are engine runs, and a legacy-routed operation is a row of the legacy
// table, which is not joined here. Refusing says so; matching none did not.
func checkRoute(field string, r Route) error {
	switch {
	case r == RouteLegacy:
		return badRequest(field, "legacy-routed operations are not listed here: they are rows of the legacy table, not engine runs (graft is the only route listed)")
	case !r.Valid():
		return badRequest(field, "%q is not a route (graft is the only route listed)", r)
	}
	return nil
}

// statusCond is the condition for one status filter value.
func (s *Server) statusCond(v StatusFilter) (string, error) {
	switch v {
	case StatusFilterPending, StatusFilterRunning, StatusFilterWaiting, StatusFilterCompleted, StatusFilterFailed, StatusFilterCancelled:
		return `r.status = '` + string(v) + `'`, nil
	case StatusFilterWaitingSignal:
		return waitingSignalExpr, nil
	case StatusFilterNeedsOperator:
		// The runs with a failed report, and the parked runs, are few:
		// the planner starts from them.
		return `(r.run_id IN (` + s.failedReportsSQL() + `
		UNION ALL SELECT p.run_id FROM ` + s.schema + `.runs p WHERE p.status = 'failed' AND (p.error->>'type') = '` +
			engine.ErrorTypeNeedsOperator + `' AND p.parent_run_id IS NULL AND NOT p.superseded) AND ` + needsOperatorExpr + `)`, nil
	case StatusFilterRetrying, StatusFilterThrottled:
		return s.waitingStepExpr(string(v)), nil
	}
	return "", badRequest("status", "%q is not a status (pending, running, waiting, completed, failed, cancelled, waiting_signal, needs_operator, retrying, throttled)", v)
}

// andStatuses adds to q that an operation is in any of the statuses (none:
// any status).
func (s *Server) andStatuses(q *query, statuses *[]StatusFilter) error {
	if statuses == nil || len(*statuses) == 0 {
		return nil
	}
	var ors []string
	for _, st := range *statuses {
		q.report = q.report || st == StatusFilterNeedsOperator
		c, err := s.statusCond(st)
		if err != nil {
			return err
		}
		ors = append(ors, c)
	}
	q.and("(" + strings.Join(ors, " OR ") + ")")
	return nil
}

// cursor is a position in the newest-first order.
type cursor struct {
	createdAt time.Time
	runID     string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.createdAt.UTC().Format(time.RFC3339Nano) + "|" + c.runID))
}

func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		if ts, id, ok := strings.Cut(string(b), "|"); ok && id != "" {
			var t time.Time
			if t, err = time.Parse(time.RFC3339Nano, ts); err == nil {
				return cursor{t, id}, nil
			}
		}
	}
	return cursor{}, badRequest("cursor", "is not a cursor this server returned")
}

// ListOperations lists operations newest first, a keyset page at a time,
// with counts per status and condition for the filter (statuses aside).
// The counts and the page are read in one snapshot.
func (s *Server) ListOperations(ctx context.Context, req ListOperationsRequestObject) (ListOperationsResponseObject, error) {
	f := req.Params
	limit := defaultPageSize
	if f.Limit != nil {
		if *f.Limit < 1 || *f.Limit > maxPageSize {
			return nil, badRequest("limit", "must be between 1 and %d", maxPageSize)
		}
		limit = *f.Limit
	}
	q, err := s.filter(principalOf(ctx), f)
	if err != nil {
		return nil, err
	}
	countsSQL := s.countsSQL(q)
	countArgs := slices.Clone(q.args)
	sqlText, err := s.listSQL(q, f, limit)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("api: list operations: %w", err)
	}
	defer tx.Rollback()
	// These queries read at most a few thousand index entries each, but a
	// filter the indexes do not cover can make the planner's estimate
	// large enough to compile them (JIT), which costs more than running
	// them.
	if _, err := tx.ExecContext(ctx, `SET LOCAL jit = off`); err != nil {
		return nil, fmt.Errorf("api: list operations: %w", err)
	}
	counts, atLeast, err := s.counts(ctx, tx, countsSQL, countArgs)
	if err != nil {
		return nil, err
	}
	var rows []opRow
	if err := tx.SelectContext(ctx, &rows, sqlText, q.args...); err != nil {
		return nil, fmt.Errorf("api: list operations: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("api: list operations: %w", err)
	}
	page := ListOperations200JSONResponse{Items: make([]OperationSummary, 0, len(rows)), Counts: counts, CountCap: ptr(int64(CountCap))}
	if len(atLeast) > 0 {
		page.CountsAtLeast = &atLeast
	}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		page.NextCursor = ptr(cursor{last.CreatedAt, last.RunID}.String())
	}
	for i := range rows {
		page.Items = append(page.Items, rows[i].summary())
	}
	return page, nil
}

// listSQL adds the status and cursor conditions of f to q (the filter's)
// and returns the query of one page of limit operations (and one more, to
// tell whether a next page exists).
func (s *Server) listSQL(q *query, f ListOperationsParams, limit int) (string, error) {
	if err := s.andStatuses(q, f.Status); err != nil {
		return "", err
	}
	if f.Cursor != nil {
		c, err := parseCursor(*f.Cursor)
		if err != nil {
			return "", err
		}
		q.and(`(r.created_at, r.run_id) < (` + q.arg(c.createdAt) + `, ` + q.arg(c.runID) + `)`)
	}
	// The page's keys first, then its rows: for a status filter the keys
	// come from runs_latest_by_status alone (an index-only scan of that
	// status, newest first), which the planner prefers to reading the
	// newest runs of every status through runs_by_created, and which stays
	// cheap when the newest runs are all in other statuses.
	order := ` ORDER BY r.created_at DESC, r.run_id DESC`
	keys := `SELECT r.run_id` + s.keysFrom(q) + q.sql() + order + ` LIMIT ` + strconv.Itoa(limit+1)
	return s.opColumns() + ` FROM ` + s.schema + `.runs r` + s.failedStepJoin() + s.reportJoin() + `
	WHERE r.run_id IN (` + keys + `)` + order, nil
}

// CountCap is where a per-status count of the operations list stops: each
// status's count reads at most CountCap+1 entries of the
// runs_latest_by_status index (and nothing else when the filter is on
// kind and time only), so a page load costs the same with a million
// operations as with ten thousand, and a status at the cap is reported as
// "at least".
const CountCap = 10000

// countedStatuses are the run statuses the list counts, each on its own.
var countedStatuses = []engine.Status{engine.StatusPending, engine.StatusRunning, engine.StatusWaiting,
	engine.StatusCompleted, engine.StatusFailed, engine.StatusCancelled}

// countsSQL counts the operations matching q, one row (name, count,
// waiting for a signal) per status and condition:
//   - each status over at most CountCap+1 runs of that status, the newest
//     (the status equality and the order let the runs_latest_by_status
//     index serve each branch, and the LIMIT stops it; without the order,
//     the planner may prefer a scan of the table for a status most runs
//     are in), with those waiting for a signal among them;
//   - needs_operator from the runs whose compensation report failed (the
//     steps_failed_by_name index), whose latest report it is, and the runs
//     the engine parked for an operator (the runs_parked_for_operator
//     index), up to the cap in all;
//   - retrying and throttled from the steps waiting for their next attempt
//     (the steps_waiting index): an operation with two waiting activities
//     counts once per status.
//
// Each reads the runs its own index names, so its cost follows what it
// counts (up to the cap), not the number of operations.
func (s *Server) countsSQL(q *query) string {
	limit := ` LIMIT ` + strconv.Itoa(CountCap+1)
	parts := make([]string, 0, len(countedStatuses)+2)
	for _, st := range countedStatuses {
		parts = append(parts, `SELECT `+pq.QuoteLiteral(string(st))+` AS name, count(*) AS n, count(*) FILTER (WHERE ws) AS ws
		FROM (SELECT `+waitingSignalExpr+` AS ws`+s.keysFrom(q)+` AND r.status = `+pq.QuoteLiteral(string(st))+q.sql()+
			` ORDER BY r.created_at DESC`+limit+`) c`)
	}
	report := pq.QuoteLiteral(cancel.ReportActivity)
	from := ` FROM ` + s.schema + `.steps f JOIN ` + s.schema + `.runs r ON r.run_id = f.run_id`
	if q.failedStep {
		from += s.failedStepJoin()
	}
	parked := ` FROM ` + s.schema + `.runs r`
	if q.failedStep {
		parked += s.failedStepJoin()
	}
	parts = append(parts, `SELECT `+pq.QuoteLiteral(CondNeedsOperator)+`, count(*), 0 FROM (SELECT 1 FROM (
		(SELECT 1`+from+`
		WHERE f.name = `+report+` AND f.error IS NOT NULL AND f.status = 'failed'
		  AND NOT EXISTS (SELECT 1 FROM `+s.schema+`.steps l WHERE l.run_id = f.run_id AND l.name = `+report+` AND l.seq > f.seq)
		  AND r.status IN ('pending','running','waiting') AND `+latestRuns+q.sql()+`)
		UNION ALL
		(SELECT 1`+parked+`
		WHERE `+parkedExpr+` AND `+latestRuns+q.sql()+`)) n`+limit+`) c`)
	parts = append(parts, `SELECT w.status, count(DISTINCT w.run_id), 0 FROM `+s.schema+`.steps w
		WHERE w.next_attempt_at IS NOT NULL AND w.status IN ('retrying','throttled')
		  AND EXISTS (SELECT 1`+s.keysFrom(q)+` AND r.run_id = w.run_id AND r.status IN ('pending','running','waiting')`+q.sql()+`)
		GROUP BY w.status`)
	return strings.Join(parts, "\nUNION ALL\n")
}

// counts runs countsSQL and returns the operations per status and
// condition, and the ones whose count is a lower bound: a status or
// condition that reached CountCap (its count is CountCap), and the
// operations waiting for a signal counted among the first CountCap
// waiting ones.
func (s *Server) counts(ctx context.Context, db sqlx.QueryerContext, text string, args []any) (map[string]int64, []string, error) {
	rows, err := db.QueryContext(ctx, text, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("api: count operations: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	capped := map[string]bool{}
	add := func(k string, n int64, atLeast bool) {
		if n == 0 {
			return
		}
		sum := out[k] + n
		out[k] = min(sum, CountCap)
		capped[k] = capped[k] || atLeast || sum > CountCap
	}
	for rows.Next() {
		var name string
		var n, ws int64
		if err := rows.Scan(&name, &n, &ws); err != nil {
			return nil, nil, err
		}
		// A status past the cap was read only in part: the count of those
		// waiting for a signal among it is a lower bound too.
		atLeast := n > CountCap
		add(name, n, atLeast)
		add(CondWaitingSignal, ws, atLeast)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	var atLeast []string
	for k, c := range capped {
		if c {
			atLeast = append(atLeast, k)
		}
	}
	slices.Sort(atLeast)
	return out, atLeast, nil
}

func (r *opRow) conditions() *[]string {
	var c []string
	if r.WaitingSig {
		c = append(c, CondWaitingSignal)
	}
	if r.NeedsOp {
		c = append(c, CondNeedsOperator)
	}
	if r.Retrying {
		c = append(c, CondRetrying)
	}
	if r.Throttled {
		c = append(c, CondThrottled)
	}
	if c == nil {
		return nil
	}
	return &c
}

// lastError is the run's error, else its latest failed step's.
func (r *opRow) lastError() *ErrorInfo {
	if len(r.Error) > 0 {
		e := errorInfo(r.Error)
		if e != nil && r.ClosedAt.Valid {
			e.At = ptr(r.ClosedAt.Time)
		}
		if e != nil && r.FailedStep.Valid {
			e.Step = ptr(r.FailedStep.String)
		}
		return e
	}
	if len(r.FailedError) == 0 {
		return nil
	}
	e := errorInfo(r.FailedError)
	if e != nil {
		e.Step = ptr(r.FailedStep.String)
		if r.FailedAt.Valid {
			e.At = ptr(r.FailedAt.Time)
		}
	}
	return e
}

func (r *opRow) summary() OperationSummary {
	o := OperationSummary{Id: r.WorkflowID, Kind: r.WorkflowType, Status: Status(r.Status), Route: RouteGraft, RunId: r.RunID,
		CreatedAt: r.FirstCreatedAt, UpdatedAt: r.UpdatedAt, Conditions: r.conditions(), LastError: r.lastError()}
	if r.RelaunchedAt.Valid {
		o.RelaunchedAt = ptr(r.RelaunchedAt.Time)
	}
	if r.Customer.Valid {
		o.Customer = ptr(r.Customer.String)
	}
	if r.Key.Valid {
		o.Key = ptr(r.Key.String)
	}
	if r.ClosedAt.Valid {
		o.ClosedAt = ptr(r.ClosedAt.Time)
	}
	if r.WakeAt.Valid && r.Status == engine.StatusWaiting {
		o.NextWakeup = ptr(r.WakeAt.Time)
	}
	return o
}

// errorRecord is the engine's persisted error form, read for display.
type errorRecord struct {
	Kind         string       `json:"kind"`
	Type         string       `json:"type"`
	Message      string       `json:"message"`
	NonRetryable bool         `json:"non_retryable"`
	Cause        *errorRecord `json:"cause"`
}

func errorInfo(b []byte) *ErrorInfo {
	var r errorRecord
	if len(b) == 0 || json.Unmarshal(b, &r) != nil {
		return nil
	}
	e := &ErrorInfo{Message: r.Message}
	if r.Kind != "" {
		e.Kind = ptr(r.Kind)
	}
	if r.Type != "" {
		e.Type = ptr(r.Type)
	}
	if r.NonRetryable {
		e.NonRetryable = ptr(true)
	}
	return e
}

// loadOperation reads operation id as p may see it: engine.ErrNotFound for
// one that does not exist or that a customer does not own.
func (s *Server) loadOperation(ctx context.Context, p Principal, id string) (*opRow, error) {
	return s.loadOperationIn(ctx, s.db, p, id)
}

// loadOperationIn is loadOperation through db (a transaction).
func (s *Server) loadOperationIn(ctx context.Context, db sqlx.QueryerContext, p Principal, id string) (*opRow, error) {
	q := &query{}
	q.and(`r.workflow_id = ` + q.arg(id))
	if p.Role == RoleCustomer {
		q.and(`r.headers->>` + s.customerKey + ` = ` + q.arg(p.Customer))
	}
	// Not opFrom's top-level filter: a child workflow is an operation too
	// when asked for by its ID.
	var r opRow
	err := sqlx.GetContext(ctx, db, &r, s.opColumns()+` FROM `+s.schema+`.runs r
	LEFT JOIN LATERAL (SELECT st.name, st.seq, st.error, st.completed_at FROM `+s.schema+`.steps st
		WHERE st.run_id = r.run_id AND st.status = 'failed' ORDER BY st.seq DESC LIMIT 1) fs ON true
	LEFT JOIN LATERAL (SELECT st.status FROM `+s.schema+`.steps st
		WHERE st.run_id = r.run_id AND st.name = `+pq.QuoteLiteral(cancel.ReportActivity)+` ORDER BY st.seq DESC LIMIT 1) rp ON true
	WHERE true`+q.sql()+` ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1`, q.args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, s.noOperation(ctx, p, id)
	}
	if err != nil {
		return nil, fmt.Errorf("api: load operation %s: %w", id, err)
	}
	return &r, nil
}

// noOperation is the 404 for an operation without a run. Staff are told
// when the legacy table has its row: an operation the flags left to the
// legacy runner (or that intake has not claimed yet) is not missing. A
// customer gets the plain 404, as for another customer's operation.
func (s *Server) noOperation(ctx context.Context, p Principal, id string) error {
	nf := notFound("operation " + quote(id))
	if s.cfg.Legacy == nil || p.Role == RoleCustomer {
		return nf
	}
	if _, ok, err := s.cfg.Legacy.Row(ctx, id); err != nil || !ok {
		return nf
	}
	nf.detail = fmt.Sprintf("operation %q has no graft run; the legacy table has its row (the flags left it to the legacy runner, or intake has not claimed it yet)", id)
	return nf
}

func quote(s string) string { return strconv.Quote(s) }
