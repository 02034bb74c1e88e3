package api

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Bounds of GetOverview's window, in minutes.
const (
	overviewDefaultMinutes = 60
	overviewMinMinutes     = 5
	overviewMaxMinutes     = 1440
)

// userRuns limits a query on runs r to operations: top-level user
// workflows, not the runs a relaunch or continue-as-new replaced.
const userRuns = `r.parent_run_id IS NULL AND r.workflow_type NOT LIKE 'graft.%' AND r.status NOT IN ('continued', 'reset')`

// GetOverview counts, over the last minutes: the operations created per
// status they have now, the operations closed per minute and status, and
// the failures per error type. Each query is a range scan of an index on a
// time column (runs_by_created, runs_closed), so its cost follows the
// window's rows, not the table's.
func (s *Server) GetOverview(ctx context.Context, req GetOverviewRequestObject) (GetOverviewResponseObject, error) {
	minutes := overviewDefaultMinutes
	if m := req.Params.Minutes; m != nil {
		if *m < overviewMinMinutes || *m > overviewMaxMinutes {
			return nil, badRequest("minutes", "must be between %d and %d", overviewMinMinutes, overviewMaxMinutes)
		}
		minutes = *m
	}
	ov, err := s.overview(ctx, minutes)
	if err != nil {
		return nil, err
	}
	return GetOverview200JSONResponse(*ov), nil
}

// The overview's queries; $1 is the window's start. overviewSQL lists them
// for tests that EXPLAIN them.
var overviewSQL = struct{ statuses, closed, failures string }{
	statuses: `SELECT r.status, count(*) FROM {{schema}}.runs r
		WHERE r.created_at >= $1 AND ` + userRuns + `
		  AND NOT r.superseded
		GROUP BY r.status`,
	closed: `SELECT date_trunc('minute', r.closed_at) AS m, r.status, count(*) FROM {{schema}}.runs r
		WHERE r.closed_at >= $1 AND ` + userRuns + `
		GROUP BY 1, 2`,
	failures: `SELECT COALESCE(NULLIF(r.error->>'type', ''), r.error->>'kind', 'unknown'), count(*) FROM {{schema}}.runs r
		WHERE r.closed_at >= $1 AND r.status = 'failed' AND ` + userRuns + `
		GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20`,
}

// OverviewQueries returns the overview's SQL for schema (quoted), each with
// one parameter, the window's start: for EXPLAIN in tests and benchmarks.
func OverviewQueries(schema string) []string {
	return []string{withSchema(overviewSQL.statuses, schema), withSchema(overviewSQL.closed, schema), withSchema(overviewSQL.failures, schema)}
}

func withSchema(q, schema string) string { return strings.ReplaceAll(q, "{{schema}}", schema) }

func (s *Server) overview(ctx context.Context, minutes int) (*Overview, error) {
	var now time.Time
	if err := s.db.GetContext(ctx, &now, `SELECT date_trunc('minute', now())`); err != nil {
		return nil, err
	}
	now = now.UTC()
	since := now.Add(-time.Duration(minutes-1) * time.Minute)
	ov := &Overview{Since: since, Until: now.Add(time.Minute), Minutes: minutes, Statuses: map[string]int64{},
		ClosedPerMinute: make([]MinuteCount, minutes), Failures: []ErrorTypeCount{}}
	for i := range ov.ClosedPerMinute {
		ov.ClosedPerMinute[i].At = since.Add(time.Duration(i) * time.Minute)
	}
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// A bound, not an expectation: with the indexes each query reads only
	// the window's rows.
	if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = '10s'`); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, withSchema(overviewSQL.statuses, s.schema), since)
	if err != nil {
		return nil, fmt.Errorf("api: overview: %w", err)
	}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return nil, err
		}
		ov.Statuses[st] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, withSchema(overviewSQL.closed, s.schema), since)
	if err != nil {
		return nil, fmt.Errorf("api: overview: %w", err)
	}
	for rows.Next() {
		var m time.Time
		var st string
		var n int64
		if err := rows.Scan(&m, &st, &n); err != nil {
			rows.Close()
			return nil, err
		}
		i := int(m.UTC().Sub(since) / time.Minute)
		if i < 0 || i >= len(ov.ClosedPerMinute) {
			continue
		}
		switch st {
		case "completed":
			ov.ClosedPerMinute[i].Completed += n
		case "failed":
			ov.ClosedPerMinute[i].Failed += n
		case "cancelled":
			ov.ClosedPerMinute[i].Cancelled += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, withSchema(overviewSQL.failures, s.schema), since)
	if err != nil {
		return nil, fmt.Errorf("api: overview: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e ErrorTypeCount
		if err := rows.Scan(&e.ErrorType, &e.Count); err != nil {
			return nil, err
		}
		ov.Failures = append(ov.Failures, e)
	}
	return ov, rows.Err()
}
