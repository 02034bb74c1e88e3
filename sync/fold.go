package graftsync

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/graftdev/graft/engine"
)

// In same-database mode with a version column, and a missing-row policy
// that never refuses a checkpoint, the mirror folds its write into the
// engine's commit statement (engine.CheckpointFolder): a batch of
// checkpoints and its legacy rows are one statement, one round trip, where
// a transaction around the engine's statement and the mirror's took four.
// The fold is a call of a function (foldFnSQL) that does what writeSameFn
// and its fallback do from Go: it writes the rows, queues the changes held
// back behind changes waiting in the outbox, and when the legacy table
// refuses the write, queues every change in the outbox instead; all inside
// the statement, which is the checkpoint's transaction.

// foldFnSQL builds the fold function: the rows statement of rowsSQL(true,
// true) in a block whose failure writes the changes to the outbox and
// returns one row ('x', the error). Its parameters are the rows
// statement's, the changes' runs and outbox payloads (text arrays), and the
// written runs (text[], given by the engine).
func (mr *Mirror) foldFnSQL() (create, sig, fn string) {
	body := mr.rowsSQL(true, true)
	body = body[:strings.LastIndex(body, ` UNION ALL SELECT 'r', set_config(`)] // the function's SET clauses do it
	n := mr.rowsParams()
	params := make([]string, n+3)
	for i := range params {
		params[i] = "text"
	}
	params[n+2] = "text[]"
	p := func(i int) string { return "$" + strconv.Itoa(i) }
	onErr := `WITH o AS (SELECT pg_current_xact_id()::text::bigint << 20 AS base),
	q AS (INSERT INTO ` + mr.outboxTable + ` (mapping, row_key, first_ord, last_ord, change)
		SELECT ` + p(rowsArrays+len(mr.extras)+1) + `, v.row_key, o.base + v.first, o.base + v.last, v.payload::jsonb
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], ` + p(n+1) + `::text[], ` + p(n+2) + `::text[]) AS v(row_key, first, last, run, payload), o
		WHERE v.run = ANY(` + p(n+3) + `)
		RETURNING 1)
	SELECT 'x'::text, SQLSTATE || ': ' || SQLERRM FROM (SELECT count(*) FROM q) n`
	return mr.fnSQL("graftsync_fold_", params, body, onErr)
}

// FoldCheckpoint folds the batch's changes into the engine's commit
// statement when the mirror can (see above); otherwise Checkpoint writes
// them.
func (mr *Mirror) FoldCheckpoint(ctx context.Context, events []*engine.CheckpointEvent) (*engine.CheckpointFold, bool) {
	if mr.sql.foldFn == "" {
		return nil, false
	}
	cs, err := mr.changes(events)
	if err != nil {
		return nil, false
	}
	if len(cs) == 0 {
		return nil, true
	}
	var runs, payloads arrayBuilder
	for _, c := range cs {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, false
		}
		runs.add(c.RunID)
		payloads.add(string(b))
		c.out, c.now = outPassed, c.State
	}
	args := mr.rowsArgs(true, cs)
	args = append(args[:len(args)-len(mr.planDefaults)], runs.String(), payloads.String())
	return &engine.CheckpointFold{Func: mr.sql.foldFn, Args: args, Done: func(ctx context.Context, rows []engine.CheckpointFoldRow) {
		mr.foldDone(ctx, cs, rows)
	}}, true
}

// foldDone accounts for a folded write once it has committed.
func (mr *Mirror) foldDone(ctx context.Context, cs []*change, rows []engine.CheckpointFoldRow) {
	byKey := make(map[string]*change, len(cs))
	for _, c := range cs {
		byKey[c.Key] = c
	}
	var deferred int64
	var skipped map[string]bool
	for _, r := range rows {
		switch r.A {
		case "x":
			mr.log.Error("graftsync: mirror write refused; changes queued for the relay", "table", mr.table.String(),
				"rows", len(cs), "err", r.B)
			mr.met.queued(ctx, int64(len(cs)))
			return
		case "d":
			deferred++
		case "f":
			// Its run's records were not written (a lost lease): nor was it.
			if skipped == nil {
				skipped = map[string]bool{}
			}
			skipped[r.B] = true
			continue
		}
		if c := byKey[r.B]; c != nil {
			c.record(r.A)
		}
	}
	if deferred > 0 {
		mr.met.queued(ctx, deferred)
	}
	if skipped != nil {
		kept := cs[:0:0]
		for _, c := range cs {
			if !skipped[c.Key] {
				kept = append(kept, c)
			}
		}
		cs = kept
	}
	_ = mr.settle(ctx, cs, false) // MissingFail does not fold: nothing to refuse
}
