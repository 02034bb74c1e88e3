package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// ResetManyResult is the outcome of one reset of ResetManyTx: Run, the new
// run, or Err when that reset was refused (ErrNotFound: no run, or no step
// matching the reset point; an error a client interceptor returned).
type ResetManyResult struct {
	Run *RunHandle
	Err error
}

// resetManyRow is one reset of a ResetManyTx statement.
type resetManyRow struct{ workflowID, newRunID string }

// resetManyCols are the columns a ResetManyTx statement unnests.
var resetManyCols = newUnnest(
	textCol("workflow_id", func(r resetManyRow) string { return r.workflowID }),
	textCol("new_run_id", func(r resetManyRow) string { return r.newRunID }),
)

// ResetManyTx resets many workflows in the caller's transaction, each as
// ResetTx would with the same options, which is what a bulk relaunch after
// an incident needs: the workflows whose latest run is closed (the usual
// case: failed) are reset together by one statement, so a batch costs one
// round trip and one plan instead of one per workflow; a workflow whose
// latest run is open is reset as ResetTx does. The latest runs are locked in
// run ID order, the order the engine's other writers of several runs lock
// them in, so neither two calls sharing some workflows nor a call and a
// worker's commit deadlock.
//
// Client interceptors see each reset as usual, but their last step only
// prepares the new run, made with the others afterwards. A reset refused
// for its own reasons is reported in its result and the others go on; tx
// stays usable. The returned error is for the whole call (a workflow ID
// given twice, options that name no single reset point, a database error
// or a conflicting start, after which tx should be rolled back). The new
// runs exist if and only if tx commits; workers are woken then.
func (c *Client) ResetManyTx(ctx context.Context, tx *sql.Tx, workflowIDs []string, opts ResetOptions) ([]ResetManyResult, error) {
	if tx == nil {
		return nil, errors.New("engine: a Tx call needs a transaction (tx is nil)")
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(workflowIDs))
	for _, id := range workflowIDs {
		if seen[id] {
			return nil, fmt.Errorf("engine: ResetManyTx: workflow ID %q is given twice", id)
		}
		seen[id] = true
	}
	res := make([]ResetManyResult, len(workflowIDs))
	byID := make(map[string]int, len(workflowIDs))
	for i, id := range workflowIDs {
		newID := newRunID()
		out, err := c.call(ctx, &ClientCallInput{Kind: ClientReset, WorkflowID: id, Args: opts},
			func(ctx context.Context, in *ClientCallInput) (any, error) {
				return &RunHandle{WorkflowID: id, RunID: newID, c: c}, nil
			})
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].Run = out.(*RunHandle)
		byID[id] = i
	}
	if len(byID) == 0 {
		return res, nil
	}
	rows := make([]resetManyRow, 0, len(byID))
	for id, i := range byID {
		rows = append(rows, resetManyRow{workflowID: id, newRunID: res[i].Run.RunID})
	}
	now := c.e.cfg.Clock.Now()
	found, err := c.resetMany(ctx, tx, rows, now, opts)
	if err != nil {
		return nil, err
	}
	for id, i := range byID {
		old, ok := found[id]
		switch {
		case !ok:
			res[i].Run, res[i].Err = nil, fmt.Errorf("%w: %q", ErrNotFound, id)
		case !old.Cut.Valid:
			res[i].Run, res[i].Err = nil, fmt.Errorf("%w: run %s of %q has no step matching the reset point", ErrNotFound, old.RunID, id)
		case !old.Made:
			// Open (rare in a bulk relaunch): closed and reset in
			// statements of its own, its run locked already.
			if err := c.resetOpen(ctx, c.sqlxTx(tx), id, res[i].Run.RunID, now, opts.Reason, old.RunID, old.Cut.Int64); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// resetManyOld is what resetMany found of one workflow: its latest run, the
// reset point in it, and whether the new run was made.
type resetManyOld struct {
	WorkflowID string        `db:"workflow_id"`
	RunID      string        `db:"run_id"`
	Status     Status        `db:"status"`
	Cut        sql.NullInt64 `db:"cut"`
	Made       bool          `db:"made"`
}

// resetMany runs the statement of ResetManyTx: it finds the latest run of
// each workflow in rows, locks them and their open children in run ID
// order, in one CTE (see Lock order in store.go), and makes the new runs of those that are closed and
// have the reset point, in tx. It returns what it found, by workflow ID.
func (c *Client) resetMany(ctx context.Context, tx *sql.Tx, rows []resetManyRow, now time.Time, opts ResetOptions) (map[string]*resetManyOld, error) {
	s := c.e.store
	b := resetManyCols.batch(len(rows))
	for _, r := range rows {
		b.add(r)
	}
	// $1 and $2 the unnested IDs and new run IDs, $3 now, $4 the reason,
	// $5 the work channel, $6 the reset point's argument.
	cut, args := opts.cutSQL(s, append(b.args(nil), now, nullString(opts.Reason), s.channel[chanWork]))
	// The latest runs are locked with the open children the resets hand to
	// the new runs, in one CTE (lk), in run ID order, as Reset does: locked
	// one set after the other, a run made by a reset or a continue-as-new
	// and then the older children it adopted, they crossed a commit that
	// closes such a child and wakes its parent. The status is the one the
	// lock found.
	// Prepared (hotQuery): the statement's plan (a dozen CTEs) costs about
	// as much as running it for a chunk of a bulk relaunch.
	found, err := c.resetManyRows(ctx, tx, `WITH req AS (SELECT * FROM `+resetManyCols.sql(0, "v")+`),
		latest AS (SELECT req.workflow_id, req.new_run_id, o.run_id FROM req CROSS JOIN LATERAL (
			SELECT r.run_id FROM `+s.runs+` r WHERE r.workflow_id = req.workflow_id
			ORDER BY (r.status IN ('pending','running','waiting')) DESC, r.created_at DESC, r.run_id DESC LIMIT 1) o),
		lk AS (SELECT x.run_id, x.status FROM `+s.runs+` x JOIN (SELECT run_id FROM latest
				UNION SELECT k.run_id FROM `+s.runs+` k JOIN latest l ON k.parent_run_id = l.run_id
				WHERE k.status IN ('pending','running','waiting')) w ON w.run_id = x.run_id
			ORDER BY x.run_id FOR UPDATE OF x),
		old AS (SELECT l.workflow_id, l.new_run_id, r.run_id, lk.status, `+cut+` AS cut FROM `+s.runs+` r
			JOIN latest l ON r.run_id = l.run_id JOIN lk ON lk.run_id = r.run_id),
		ok AS (SELECT run_id, cut, new_run_id FROM old WHERE cut IS NOT NULL AND status NOT IN ('pending','running','waiting')),
		`+c.resetCopySQL()+`,
		notified AS (SELECT count(*) FROM made)
		SELECT old.workflow_id, old.run_id, old.status, old.cut, EXISTS (SELECT 1 FROM ok WHERE ok.run_id = old.run_id) AS made
		FROM old, notified`, args...)
	if pe, ok := err.(*pq.Error); ok && pe.Code == "23505" {
		return nil, fmt.Errorf("%w: a workflow of the batch has another open run (%s)", ErrAlreadyStarted, pe.Detail)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: reset many: %w", err)
	}
	out := make(map[string]*resetManyOld, len(found))
	for i := range found {
		out[found[i].WorkflowID] = &found[i]
	}
	return out, nil
}

// resetManyRows runs q, resetMany's statement, prepared, and reads its rows.
func (c *Client) resetManyRows(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]resetManyOld, error) {
	rows, err := c.e.store.hotQuery(ctx, tx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var found []resetManyOld
	for rows.Next() {
		var o resetManyOld
		if err := rows.Scan(&o.WorkflowID, &o.RunID, &o.Status, &o.Cut, &o.Made); err != nil {
			return nil, err
		}
		found = append(found, o)
	}
	return found, rows.Err()
}

// cutSQL is the reset point of run r as an SQL expression, which takes
// parameter $6 when it needs one: args holds $1..$5, and the returned
// arguments add $6.
func (o ResetOptions) cutSQL(s *store, args []any) (string, []any) {
	switch {
	case o.BeforeLastFailedActivity:
		return `(SELECT max(seq) FROM ` + s.steps + ` st WHERE st.run_id = r.run_id AND st.kind = 'activity' AND st.status = 'failed')`, args
	case o.BeforeStep != "":
		return `(SELECT min(seq) FROM ` + s.steps + ` st WHERE st.run_id = r.run_id AND st.name = $6)`, append(args, o.BeforeStep)
	default:
		return `$6::bigint`, append(args, o.BeforeSeq)
	}
}
