package api

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// A bulk job acts on its items a chunk at a time: one transaction holds
// the actions on a chunk's items, their audit and their report lines, so a
// commit (and the statements shared by the chunk: the item locks, the
// operations' lookup, the audit and the report) is paid once per chunk,
// not once per item. An item is still acted on at most once: its action
// and its report line commit together.
const (
	// bulkChunkWindow is the share of a second one chunk covers at the
	// job's rate: items are paced a chunk at a time. 50 ms (100 items at
	// 2,000/s) rather than 20 (40): a chunk's fixed costs (begin, commit,
	// six statements' round trips and plans) then weigh half as much per
	// item (api bench -stats at 1M: pg_backend_cpu_us_per_item 211-228 ->
	// 149-172, round trips per item 0.26 -> 0.12).
	bulkChunkWindow = 50 * time.Millisecond
	// maxBulkChunk bounds the items of one transaction.
	maxBulkChunk = 100
)

// bulkChunkSize is how many items one transaction takes at rate.
func bulkChunkSize(rate float64) int {
	return int(math.Min(math.Max(math.Ceil(rate*bulkChunkWindow.Seconds()), 1), maxBulkChunk))
}

// bulkOutcome is what acting on one item came to.
type bulkOutcome struct {
	id, state, detail, newRun string
	audit                     map[string]any // nil: nothing to audit
}

// bulkChunk acts on the items c of job j, pending when the batch read them,
// in seq order, in one transaction, counting their progress in shard. When
// one action fails, the transaction is rolled back (nothing of the chunk
// happened) and the items are taken one at a time (bulkItem), which records
// the failing item's error and acts on the others.
func (s *Server) bulkChunk(ctx context.Context, j *bulkJobRow, spec *bulkSpec, c []bulkPending, shard int) (acted int, err error) {
	if len(c) == 1 {
		return 1, s.bulkItem(ctx, j, spec, c[0].ID, shard)
	}
	done, cerr := s.tryBulkChunk(ctx, j, spec, c, shard)
	if cerr == nil {
		return done, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	for _, it := range c {
		if e := s.bulkItem(ctx, j, spec, it.ID, shard); e != nil {
			err = cmpErr(err, e)
			continue
		}
		acted++
	}
	return acted, err
}

// tryBulkChunk is bulkChunk's transaction; an error means nothing of it
// committed.
func (s *Server) tryBulkChunk(ctx context.Context, j *bulkJobRow, spec *bulkSpec, c []bulkPending, shard int) (int, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// The items still pending, locked, in the job's order: those of the
	// chunk's seq range (items only ever leave 'pending', so the range holds
	// no other pending item), read from the pending items' index by range,
	// not probed one by one.
	var items []bulkPending
	if err := tx.SelectContext(ctx, &items, `SELECT operation_id, seq, run_id FROM `+s.schema+`.bulk_items
		WHERE job_id = $1 AND seq BETWEEN $2 AND $3 AND state = 'pending' ORDER BY seq FOR UPDATE`,
		j.ID, c[0].Seq, c[len(c)-1].Seq); err != nil {
		return 0, fmt.Errorf("api: bulk items %s: %w", j.ID, err)
	}
	if len(items) == 0 {
		return 0, nil
	}
	pending := make([]string, len(items))
	for i, it := range items {
		pending[i] = it.ID
	}
	if spec.Action == BulkActionRelaunch {
		if err := relaunchLocks(ctx, tx, pending); err != nil {
			return 0, err
		}
	}
	ops, err := s.loadOperationsIn(ctx, tx, j.principal(), pending)
	if err != nil {
		return 0, err
	}
	outs := make([]bulkOutcome, 0, len(items))
	if spec.Action == BulkActionRelaunch {
		if outs, err = s.relaunchChunk(ctx, tx, j, spec, items, ops); err != nil {
			return 0, err
		}
	} else {
		for _, it := range items {
			o, err := s.bulkActOn(ctx, tx, j, spec, it.ID, it.RunID, ops[it.ID])
			if err != nil {
				return 0, err
			}
			outs = append(outs, o)
		}
	}
	if err := s.auditBulk(ctx, tx, j, spec, outs); err != nil {
		return 0, err
	}
	cols := [4][]string{}
	for _, o := range outs {
		cols[0], cols[1] = append(cols[0], o.id), append(cols[1], o.state)
		cols[2], cols[3] = append(cols[2], o.detail), append(cols[3], o.newRun)
	}
	if _, err := tx.ExecContext(ctx, s.withProgress(`UPDATE `+s.schema+`.bulk_items b SET state = v.state, detail = NULLIF(v.detail, ''),
			new_run_id = NULLIF(v.new_run, ''), at = now()
		FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS v(id, state, detail, new_run)
		WHERE b.job_id = $1 AND b.operation_id = v.id RETURNING b.state, b.at`, 1, 6),
		j.ID, pq.Array(cols[0]), pq.Array(cols[1]), pq.Array(cols[2]), pq.Array(cols[3]), shard); err != nil {
		return 0, err
	}
	return len(items), tx.Commit()
}

// bulkPending is a pending item of a chunk: its operation, its place in
// the job, and the run the job found when it was created (read when the
// item is locked).
type bulkPending struct {
	ID    string `db:"operation_id"`
	Seq   int64  `db:"seq"`
	RunID string `db:"run_id"`
}

// bulkShard is the progress shard of a batch's worker w (shard 0 is the
// job's creation and end).
func bulkShard(w int) int { return w + 1 }

// relaunchChunk relaunches the chunk's eligible items in tx together, in
// one statement of the engine (ResetManyTx), and returns every item's
// outcome in the chunk's order. Any item's reset error is the chunk's.
func (s *Server) relaunchChunk(ctx context.Context, tx *sqlx.Tx, j *bulkJobRow, spec *bulkSpec, items []bulkPending,
	ops map[string]*opRow) ([]bulkOutcome, error) {
	outs := make([]bulkOutcome, len(items))
	var ids []string
	var at []int
	for i, it := range items {
		o, act := s.bulkEligible(ctx, j, spec, it.ID, it.RunID, ops[it.ID])
		outs[i] = o
		if act {
			ids, at = append(ids, it.ID), append(at, i)
		}
	}
	if len(ids) == 0 {
		return outs, nil
	}
	res, err := s.client.ResetManyTx(ctx, tx.Tx, ids, bulkResetOptions(j))
	if err != nil {
		return nil, err
	}
	for k, r := range res {
		if r.Err != nil {
			return nil, r.Err
		}
		outs[at[k]].relaunched(r.Run.RunID)
	}
	return outs, nil
}

// relaunchLocks is relaunchLock for several operations, taken in one
// order (by key) so that two transactions taking some of the same never
// wait for each other in a cycle.
func relaunchLocks(ctx context.Context, tx *sqlx.Tx, ids []string) error {
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = relaunchKey(id)
	}
	slices.Sort(keys)
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, n) ORDER BY n`, pq.Array(keys))
	return err
}

// relaunchKey is the advisory lock key of operation id's relaunches.
func relaunchKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("graft-api-relaunch:" + id))
	return int64(h.Sum64()) //nolint:gosec // G115: the hash's bits as a lock key; wrapping is wanted
}

// loadOperationsIn is loadOperationIn for several operations at once, as
// far as a bulk job's choice needs (bulkEligible): the latest run p may
// see of each, by ID, with its ID, type and status only. The columns the
// API shows (the failed step, the report, the waits) are left out: they
// cost a probe of the steps each, and a chunk reads tens of operations.
func (s *Server) loadOperationsIn(ctx context.Context, db sqlx.QueryerContext, p Principal, ids []string) (map[string]*opRow, error) {
	q := &query{}
	q.and(`r.workflow_id = ANY(` + q.arg(pq.Array(ids)) + `::text[])`)
	if p.Role == RoleCustomer {
		q.and(`r.headers->>` + s.customerKey + ` = ` + q.arg(p.Customer))
	}
	var rows []opRow
	if err := sqlx.SelectContext(ctx, db, &rows, `SELECT DISTINCT ON (r.workflow_id) r.run_id, r.workflow_id, r.workflow_type, r.status
		FROM `+s.schema+`.runs r WHERE true`+q.sql()+` ORDER BY r.workflow_id, r.created_at DESC, r.run_id DESC`, q.args...); err != nil {
		return nil, fmt.Errorf("api: load operations: %w", err)
	}
	out := make(map[string]*opRow, len(rows))
	for i := range rows {
		out[rows[i].WorkflowID] = &rows[i]
	}
	return out, nil
}

// auditBulk records the chunk's actions, as bulkAct's audit does one by one.
func (s *Server) auditBulk(ctx context.Context, tx *sqlx.Tx, j *bulkJobRow, spec *bulkSpec, outs []bulkOutcome) error {
	var ops, details []string
	for _, o := range outs {
		if o.audit == nil {
			continue
		}
		b, err := json.Marshal(o.audit)
		if err != nil {
			return fmt.Errorf("api: audit %s: %w", spec.Action, err)
		}
		ops, details = append(ops, o.id), append(details, string(b))
	}
	if len(ops) == 0 {
		return nil
	}
	p := j.principal()
	_, err := tx.ExecContext(ctx, `INSERT INTO `+s.schema+`.api_audit (actor, token_id, role, action, operation_id, reason, detail)
		SELECT $1, NULLIF($2, ''), $3, $4, v.op, NULLIF($5, ''), v.detail::jsonb
		FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS v(op, detail, n) ORDER BY v.n`,
		p.Name, p.TokenID, string(p.Role), string(spec.Action), j.Reason, pq.Array(ops), pq.Array(details))
	if err != nil {
		return fmt.Errorf("api: audit %s: %w", spec.Action, err)
	}
	return nil
}
