package api

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"strings"
	"time"
)

// bulkItemRow is a bulk_items row as the report reads it.
type bulkItemRow struct {
	ID       string         `db:"operation_id"`
	State    string         `db:"state"`
	Detail   sql.NullString `db:"detail"`
	RunID    string         `db:"run_id"`
	NewRunID sql.NullString `db:"new_run_id"`
	At       sql.NullTime   `db:"at"`
}

// GetBulkReport returns each operation's outcome in the job's order, as
// JSON or, asked by format=csv or Accept: text/csv, as CSV.
func (s *Server) GetBulkReport(ctx context.Context, req GetBulkReportRequestObject) (GetBulkReportResponseObject, error) {
	csvWanted := strings.Contains(fmt.Sprint(ctx.Value(acceptKey{})), "text/csv")
	if f := req.Params.Format; f != nil {
		if !f.Valid() {
			return nil, badRequest("format", "%q is not json or csv", *f)
		}
		csvWanted = *f == ReportCSV
	}
	j, err := s.loadJob(ctx, s.db, principalOf(ctx), req.JobId, false)
	if err != nil {
		return nil, err
	}
	var rows []bulkItemRow
	if err := s.db.SelectContext(ctx, &rows, `SELECT operation_id, state, detail, run_id, new_run_id, at FROM `+s.schema+`.bulk_items
		WHERE job_id = $1 ORDER BY seq`, j.ID); err != nil {
		return nil, fmt.Errorf("api: bulk job %s report: %w", j.ID, err)
	}
	if csvWanted {
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		_ = w.Write([]string{"operation_id", "outcome", "detail", "run_id", "new_run_id", "at"})
		for _, r := range rows {
			at := ""
			if r.At.Valid {
				at = r.At.Time.UTC().Format(time.RFC3339Nano)
			}
			_ = w.Write([]string{r.ID, r.State, r.Detail.String, r.RunID, r.NewRunID.String, at})
		}
		w.Flush()
		return GetBulkReport200TextcsvResponse{Body: &b, ContentLength: int64(b.Len())}, nil
	}
	v, err := s.jobView(ctx, j)
	if err != nil {
		return nil, err
	}
	rep := GetBulkReport200JSONResponse{Job: *v, Items: make([]BulkReportItem, 0, len(rows))}
	for _, r := range rows {
		it := BulkReportItem{Id: r.ID, Outcome: r.State, RunId: ptr(r.RunID)}
		if r.Detail.Valid {
			it.Detail = ptr(r.Detail.String)
		}
		if r.NewRunID.Valid {
			it.NewRunId = ptr(r.NewRunID.String)
		}
		if r.At.Valid {
			it.At = ptr(r.At.Time)
		}
		rep.Items = append(rep.Items, it)
	}
	return rep, nil
}
