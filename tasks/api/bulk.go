package api

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
)

// bulkJobRow is a bulk_jobs row.
type bulkJobRow struct {
	ID         string         `db:"id"`
	Action     string         `db:"action"`
	Filter     []byte         `db:"filter"`
	Exclude    []byte         `db:"exclude"`
	Signal     []byte         `db:"signal"`
	Rate       float64        `db:"rate"`
	Reason     string         `db:"reason"`
	Actor      string         `db:"actor"`
	TokenID    sql.NullString `db:"token_id"`
	Role       string         `db:"role"`
	Customer   sql.NullString `db:"customer"`
	State      string         `db:"state"`
	Requested  sql.NullString `db:"requested"`
	RetryOf    sql.NullString `db:"retry_of"`
	FromStep   sql.NullString `db:"from_step"`
	Total      int            `db:"total"`
	CreatedAt  time.Time      `db:"created_at"`
	FinishedAt sql.NullTime   `db:"finished_at"`
}

const bulkJobColumns = `id, action, filter, exclude, signal, rate, reason, actor, token_id, role, customer, state, requested,
	retry_of, from_step, total, created_at, finished_at`

// principal is who created the job; its items are acted on as them.
func (j *bulkJobRow) principal() Principal {
	return Principal{Name: j.Actor, TokenID: j.TokenID.String, Role: Role(j.Role), Customer: j.Customer.String}
}

func (j *bulkJobRow) spec() (*bulkSpec, error) {
	sp := &bulkSpec{Action: BulkAction(j.Action), Rate: j.Rate, Reason: j.Reason, FromStep: j.FromStep.String}
	if err := json.Unmarshal(j.Filter, &sp.Filter); err != nil {
		return nil, fmt.Errorf("api: bulk job %s filter: %w", j.ID, err)
	}
	if len(j.Exclude) > 0 {
		if err := json.Unmarshal(j.Exclude, &sp.Exclude); err != nil {
			return nil, fmt.Errorf("api: bulk job %s exclude: %w", j.ID, err)
		}
	}
	if len(j.Signal) > 0 {
		if err := json.Unmarshal(j.Signal, &sp.Signal); err != nil {
			return nil, fmt.Errorf("api: bulk job %s signal: %w", j.ID, err)
		}
	}
	return sp, nil
}

// loadJob reads job id, or engine.ErrNotFound's 404 when there is none or
// p, a customer, did not create it.
func (s *Server) loadJob(ctx context.Context, db sqlx.QueryerContext, p Principal, id string, forUpdate bool) (*bulkJobRow, error) {
	var j bulkJobRow
	text := `SELECT ` + bulkJobColumns + ` FROM ` + s.schema + `.bulk_jobs WHERE id = $1`
	args := []any{id}
	if p.Role == RoleCustomer {
		text += ` AND customer = $2`
		args = append(args, p.Customer)
	}
	if forUpdate {
		text += ` FOR UPDATE`
	}
	err := sqlx.GetContext(ctx, db, &j, text, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("bulk job " + quote(id))
	}
	if err != nil {
		return nil, fmt.Errorf("api: bulk job %s: %w", id, err)
	}
	return &j, nil
}

// jobView is the API's view of a job with its progress.
func (s *Server) jobView(ctx context.Context, j *bulkJobRow) (*BulkJob, error) {
	sp, err := j.spec()
	if err != nil {
		return nil, err
	}
	counts, pace, err := s.bulkCounts(ctx, j.ID, j.Total)
	if err != nil {
		return nil, err
	}
	v := &BulkJob{Id: j.ID, Action: sp.Action, State: BulkState(j.State), Reason: j.Reason, Rate: j.Rate,
		Total: j.Total, Done: counts["done"], Failed: counts["failed"], Skipped: counts["skipped"], Pending: counts["pending"],
		CreatedAt: j.CreatedAt, CreatedBy: j.Actor, Filter: sp.Filter, Signal: sp.Signal}
	switch {
	case j.State == "running" && j.Requested.String == "pause":
		v.State = BulkStatePausing
	case (j.State == "running" || j.State == "paused") && j.Requested.String == "stop":
		v.State = BulkStateStopping
	}
	if pace > 0 {
		v.ActualRate = ptr(pace)
	}
	if len(sp.Exclude) > 0 {
		v.Exclude = &sp.Exclude
	}
	if j.FinishedAt.Valid {
		v.FinishedAt = ptr(j.FinishedAt.Time)
	}
	if j.RetryOf.Valid {
		v.RetryOf = ptr(j.RetryOf.String)
	}
	if j.FromStep.Valid {
		v.FromStep = ptr(j.FromStep.String)
	}
	return v, nil
}

func newJobID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "bulk-" + hex.EncodeToString(b[:])
}

// CreateBulkJob previews (dry_run) or starts a bulk job.
func (s *Server) CreateBulkJob(ctx context.Context, req CreateBulkJobRequestObject) (CreateBulkJobResponseObject, error) {
	p := principalOf(ctx)
	spec, err := s.checkBulkRequest(p, req.Body)
	if err != nil {
		return nil, err
	}
	if req.Body.DryRun != nil && *req.Body.DryRun {
		sel, err := s.selectBulk(ctx, s.db, p, spec)
		if err != nil {
			return nil, err
		}
		pv, err := s.preview(ctx, sel, spec)
		if err != nil {
			return nil, err
		}
		return CreateBulkJob200JSONResponse(*pv), nil
	}
	j, err := s.startJob(ctx, p, spec, "")
	if err != nil {
		return nil, err
	}
	return CreateBulkJob201JSONResponse(*j), nil
}

// startJob records a job over what spec selects, and starts its workflow,
// in one transaction: on any error nothing is left behind.
func (s *Server) startJob(ctx context.Context, p Principal, spec *bulkSpec, retryOf string) (*BulkJob, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	sel, err := s.selectBulk(ctx, tx, p, spec)
	if err != nil {
		return nil, err
	}
	// An ID asked for that matches nothing is reported skipped, as the dry
	// run shows it, rather than left out of the job without a word.
	for _, op := range sel.notFound {
		sel.items = append(sel.items, bulkCandidate{ID: op, Why: "not found"})
	}
	id := newJobID()
	filter, _ := json.Marshal(spec.Filter)
	var exclude, signal sql.NullString
	if len(spec.Exclude) > 0 {
		b, _ := json.Marshal(spec.Exclude)
		exclude = sql.NullString{String: string(b), Valid: true}
	}
	if spec.Signal != nil {
		b, _ := json.Marshal(spec.Signal)
		signal = sql.NullString{String: string(b), Valid: true}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+s.schema+`.bulk_jobs (id, action, filter, exclude, signal, rate, reason,
		actor, token_id, role, customer, retry_of, total, from_step)
		VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::jsonb, $6, $7, $8, NULLIF($9, ''), $10, NULLIF($11, ''), NULLIF($12, ''), $13,
		NULLIF($14, ''))`,
		id, string(spec.Action), string(filter), exclude, signal, spec.Rate, spec.Reason,
		p.Name, p.TokenID, string(p.Role), p.Customer, retryOf, len(sel.items), spec.FromStep); err != nil {
		return nil, fmt.Errorf("api: bulk job: %w", err)
	}
	const chunk = 5000
	for lo := 0; lo < len(sel.items); lo += chunk {
		part := sel.items[lo:min(lo+chunk, len(sel.items))]
		ops, runs, states, whys := make([]string, len(part)), make([]string, len(part)), make([]string, len(part)), make([]string, len(part))
		seqs := make([]int64, len(part))
		for i, it := range part {
			ops[i], runs[i], seqs[i], whys[i], states[i] = it.ID, it.RunID, int64(lo+i), it.Why, "pending"
			if it.Why != "" {
				states[i] = "skipped"
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+s.schema+`.bulk_items (job_id, operation_id, seq, run_id, state, detail, at)
			SELECT $1, o, n, r, st, NULLIF(d, ''), CASE WHEN st = 'skipped' THEN now() END
			FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[]) AS u(o, n, r, st, d)`,
			id, pq.Array(ops), pq.Array(seqs), pq.Array(runs), pq.Array(states), pq.Array(whys)); err != nil {
			return nil, fmt.Errorf("api: bulk items: %w", err)
		}
	}
	skipped := 0
	for _, it := range sel.items {
		if it.Why != "" {
			skipped++
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+s.schema+`.bulk_progress (job_id, shard, skipped) VALUES ($1, 0, $2)`,
		id, skipped); err != nil {
		return nil, fmt.Errorf("api: bulk job progress: %w", err)
	}
	detail := map[string]any{"job": id, "action": spec.Action, "filter": spec.Filter, "total": len(sel.items), "eligible": sel.eligible, "rate": spec.Rate}
	if retryOf != "" {
		detail["retry_of"] = retryOf
	}
	if spec.FromStep != "" {
		detail["from_step"] = spec.FromStep
	}
	if err := s.audit(ctx, tx, p, "bulk_create", "", spec.Reason, detail); err != nil {
		return nil, err
	}
	in, _ := json.Marshal(bulkRunIn{JobID: id})
	if _, err := s.client.StartByNameTx(ctx, tx.Tx, BulkWorkflow, in, &engine.StartOptions{ID: id, Queue: BulkQueue}); err != nil {
		return nil, fmt.Errorf("api: start bulk job: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	j, err := s.loadJob(ctx, s.db, p, id, false)
	if err != nil {
		return nil, err
	}
	return s.jobView(ctx, j)
}

// ListBulkJobs lists jobs newest first; a customer sees the ones it made.
func (s *Server) ListBulkJobs(ctx context.Context, req ListBulkJobsRequestObject) (ListBulkJobsResponseObject, error) {
	limit := defaultPageSize
	if req.Params.Limit != nil {
		if *req.Params.Limit < 1 || *req.Params.Limit > maxPageSize {
			return nil, badRequest("limit", "must be between 1 and %d", maxPageSize)
		}
		limit = *req.Params.Limit
	}
	p := principalOf(ctx)
	text := `SELECT ` + bulkJobColumns + ` FROM ` + s.schema + `.bulk_jobs`
	args := []any{limit}
	if p.Role == RoleCustomer {
		text += ` WHERE customer = $2`
		args = append(args, p.Customer)
	}
	var rows []bulkJobRow
	if err := s.db.SelectContext(ctx, &rows, text+` ORDER BY created_at DESC, id DESC LIMIT $1`, args...); err != nil {
		return nil, fmt.Errorf("api: list bulk jobs: %w", err)
	}
	out := ListBulkJobs200JSONResponse{Items: make([]BulkJob, 0, len(rows))}
	for i := range rows {
		v, err := s.jobView(ctx, &rows[i])
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, *v)
	}
	return out, nil
}

// GetBulkJob returns a job and its progress.
func (s *Server) GetBulkJob(ctx context.Context, req GetBulkJobRequestObject) (GetBulkJobResponseObject, error) {
	j, err := s.loadJob(ctx, s.db, principalOf(ctx), req.JobId, false)
	if err != nil {
		return nil, err
	}
	v, err := s.jobView(ctx, j)
	if err != nil {
		return nil, err
	}
	return GetBulkJob200JSONResponse(*v), nil
}

// control asks a job to pause, resume or stop: the request is recorded
// on the job (its batches stop taking items at once) and signalled to its
// workflow, in one transaction, if the job's state allows it.
func (s *Server) control(ctx context.Context, id, what string, body *BulkControl) (*BulkJob, error) {
	p := principalOf(ctx)
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	j, err := s.loadJob(ctx, tx, p, id, true)
	if err != nil {
		return nil, err
	}
	open := j.State == "running" || j.State == "paused"
	var requested any
	switch what {
	case "pause":
		if j.State != "running" || j.Requested.Valid {
			return nil, conflict("bulk job %s is %s; only a running job can be paused", id, s.stateWord(j))
		}
		requested = "pause"
	case "resume":
		if !open || j.Requested.String != "pause" {
			return nil, conflict("bulk job %s is %s; only a paused job can be resumed", id, s.stateWord(j))
		}
	case "stop":
		if !open || j.Requested.String == "stop" {
			return nil, conflict("bulk job %s is %s; only a running or paused job can be stopped", id, s.stateWord(j))
		}
		requested = "stop"
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+s.schema+`.bulk_jobs SET requested = $2 WHERE id = $1`, id, requested); err != nil {
		return nil, err
	}
	if err := s.client.SignalTx(ctx, tx.Tx, id, what, struct{}{}); err != nil {
		return nil, fmt.Errorf("api: %s bulk job %s: %w", what, id, err)
	}
	var reason string
	if body != nil {
		reason = deref(body.Reason)
	}
	if err := s.audit(ctx, tx, p, "bulk_"+what, "", reason, map[string]string{"job": id}); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	if j, err = s.loadJob(ctx, s.db, p, id, false); err != nil {
		return nil, err
	}
	return s.jobView(ctx, j)
}

func (s *Server) stateWord(j *bulkJobRow) string {
	switch {
	case j.Requested.String == "pause" && j.State == "running":
		return "pausing"
	case j.Requested.String == "stop" && j.State != "stopped":
		return "stopping"
	}
	return j.State
}

// PauseBulkJob pauses a running job after the items in hand.
func (s *Server) PauseBulkJob(ctx context.Context, req PauseBulkJobRequestObject) (PauseBulkJobResponseObject, error) {
	v, err := s.control(ctx, req.JobId, "pause", req.Body)
	if err != nil {
		return nil, err
	}
	return PauseBulkJob200JSONResponse(*v), nil
}

// ResumeBulkJob resumes a paused (or pausing) job.
func (s *Server) ResumeBulkJob(ctx context.Context, req ResumeBulkJobRequestObject) (ResumeBulkJobResponseObject, error) {
	v, err := s.control(ctx, req.JobId, "resume", req.Body)
	if err != nil {
		return nil, err
	}
	return ResumeBulkJob200JSONResponse(*v), nil
}

// StopBulkJob stops a job for good.
func (s *Server) StopBulkJob(ctx context.Context, req StopBulkJobRequestObject) (StopBulkJobResponseObject, error) {
	v, err := s.control(ctx, req.JobId, "stop", req.Body)
	if err != nil {
		return nil, err
	}
	return StopBulkJob200JSONResponse(*v), nil
}

// RetryFailedBulkJob starts a job with the same action over the operations
// a finished job failed on.
func (s *Server) RetryFailedBulkJob(ctx context.Context, req RetryFailedBulkJobRequestObject) (RetryFailedBulkJobResponseObject, error) {
	p := principalOf(ctx)
	j, err := s.loadJob(ctx, s.db, p, req.JobId, false)
	if err != nil {
		return nil, err
	}
	if j.State != "completed" && j.State != "stopped" {
		return nil, conflict("bulk job %s is %s; retry its failures once it has finished", j.ID, s.stateWord(j))
	}
	spec, err := j.spec()
	if err != nil {
		return nil, err
	}
	var failed []string
	if err := s.db.SelectContext(ctx, &failed, `SELECT operation_id FROM `+s.schema+`.bulk_items
		WHERE job_id = $1 AND state = 'failed' ORDER BY seq`, j.ID); err != nil {
		return nil, fmt.Errorf("api: bulk job %s failures: %w", j.ID, err)
	}
	if len(failed) == 0 {
		return nil, conflict("bulk job %s has no failed operations to retry", j.ID)
	}
	if b := req.Body; b != nil {
		if b.Reason != nil {
			if err := required("reason", *b.Reason); err != nil {
				return nil, err
			}
			spec.Reason = *b.Reason
		}
		if b.Rate != nil {
			if err := checkRate(*b.Rate); err != nil {
				return nil, err
			}
			spec.Rate = *b.Rate
		}
	}
	spec.Filter, spec.Exclude = BulkFilter{Ids: &failed}, nil
	v, err := s.startJob(ctx, p, spec, j.ID)
	if err != nil {
		return nil, err
	}
	return RetryFailedBulkJob201JSONResponse(*v), nil
}
