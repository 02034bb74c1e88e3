package graftsync

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/graftdev/graft/engine"
)

// In same-database mode with a version column, and a missing-row policy
// that never refuses a checkpoint, the mirror folds its write into the
// engine's commit statement (engine.CheckpointFolder): a batch of
// checkpoints and its legacy rows are one statement, one round trip, where
// a transaction around the engine's statement and the mirror's took four.
// The fold is a call of a function (foldFnSQL) that writes the rows as
// writeSameFn does. What writeSameFn handles from Go, a write the legacy
// table refuses and rows with changes waiting in the outbox, makes the
// function fail instead: the engine then writes the batch again in a
// transaction and calls Checkpoint, which queues the changes in the outbox.
// Both are rare, and keeping them out of the function spares every batch
// a subtransaction and the outbox payloads.

// foldFnSQL builds the fold function: the rows statement of rowsSQL(true,
// true), after a check that fails the call when a change of the batch's
// rows waits in the outbox. Its parameters are the rows statement's, the
// changes' runs (a text array) and the written runs (text[], given by the
// engine).
func (mr *Mirror) foldFnSQL() (create, sig, fn string) {
	body := mr.rowsSQL(true, true)
	body = body[:strings.LastIndex(body, ` UNION ALL SELECT 'r', set_config(`)] // the function's SET clauses do it
	n := mr.rowsParams()
	params := make([]string, n+2)
	for i := range params {
		params[i] = "text"
	}
	params[n+1] = "text[]"
	mapping := "$" + strconv.Itoa(rowsArrays+len(mr.extras)+1)
	check := `IF EXISTS (SELECT 1 FROM ` + mr.outboxTable + ` WHERE mapping = ` + mapping + `)
		AND EXISTS (SELECT 1 FROM ` + mr.outboxTable + ` WHERE mapping = ` + mapping + ` AND row_key = ANY($1::text[])) THEN
		RAISE EXCEPTION 'graftsync: changes of these rows wait in the outbox' USING ERRCODE = '` + foldDeferred + `';
	END IF;
	RETURN QUERY `
	return mr.fnSQL("graftsync_fold_", params, check+body, "")
}

// foldDeferred is the SQLSTATE of the fold function's refusal of a batch
// whose rows have changes waiting in the outbox.
const foldDeferred = "GS001"

// FoldCheckpoint folds the batch's changes into the engine's commit
// statement when the mirror can (see above); otherwise Checkpoint writes
// them.
func (mr *Mirror) FoldCheckpoint(_ context.Context, events []*engine.CheckpointEvent) (*engine.CheckpointFold, bool) {
	if mr.sql.foldFn == "" {
		return nil, false
	}
	fs, _ := foldScratches.Get().(*foldScratch)
	if fs == nil {
		fs = &foldScratch{}
	}
	cs, err := mr.changesIn(events, fs)
	if err != nil || len(cs) == 0 {
		fs.release()
		return nil, err == nil
	}
	// The changes to look up, then those that would change nothing (see
	// recentRows), which the function does not see: whether their runs
	// were written, which is all recentRows needs of them, the engine
	// tells (Unwritten).
	order := cs
	look := len(cs)
	if mr.recent.max > 0 {
		order = fs.sorted(len(cs))
		look = 0
		same := len(cs)
		for _, c := range cs {
			c.out, c.now = outPassed, c.State
			v := mr.valsOf(c)
			if mr.recent.unchanged(c, &v) {
				same--
				order[same] = c
			} else {
				order[look] = c
				look++
			}
		}
		slices.Reverse(order[look:]) // in the batch's order
	} else {
		for _, c := range cs {
			c.out, c.now = outPassed, c.State
		}
	}
	args := mr.rowsArgs(true, order[:look], true)
	var unwritten []string
	return &engine.CheckpointFold{Func: mr.sql.foldFn, Args: args,
		Unwritten: func(runs []string) { unwritten = runs },
		Done: func(ctx context.Context, rows []engine.CheckpointFoldRow) {
			mr.foldDone(ctx, order, look, rows, unwritten)
			fs.release()
		}}, true
}

// foldScratch is the memory FoldCheckpoint folds a batch's events in: the
// changes (a few hundred bytes each, most of what a fold allocates), the
// map and the slices that order them. Done hands it on to a later batch;
// a fold the engine drops without calling Done leaves it to the collector.
type foldScratch struct {
	all   []change
	byKey map[string]*change
	order []*change
	// byLook: the changes looked up first, then the others (FoldCheckpoint).
	byLook []*change
}

// foldScratches holds the foldScratch of the folds whose Done has run.
var foldScratches sync.Pool

// maxFoldScratch is the most changes a foldScratch keeps for reuse: the
// memory of an exceptional batch goes back to the collector.
const maxFoldScratch = 4096

// take returns n zeroed changes, an empty map and an empty slice for a
// batch of n events.
func (fs *foldScratch) take(n int) ([]change, map[string]*change, []*change) {
	if cap(fs.all) < n {
		fs.all = make([]change, n)
		fs.order = make([]*change, 0, n)
	}
	if fs.byKey == nil {
		fs.byKey = make(map[string]*change, n)
	}
	fs.all = fs.all[:n]
	return fs.all, fs.byKey, fs.order[:0]
}

// sorted returns a slice of n changes for FoldCheckpoint's order.
func (fs *foldScratch) sorted(n int) []*change {
	if cap(fs.byLook) < n {
		fs.byLook = make([]*change, n)
	}
	fs.byLook = fs.byLook[:n]
	return fs.byLook
}

// release drops what fs references and hands it to a later fold.
func (fs *foldScratch) release() {
	if cap(fs.all) > maxFoldScratch {
		return
	}
	clear(fs.all)
	clear(fs.byKey)
	clear(fs.byLook)
	clear(fs.order[:cap(fs.order)])
	foldScratches.Put(fs)
}

// foldDone accounts for a folded write once it has committed: cs[:look]
// were looked up, cs[look:] changed nothing.
// The fold's rows (see rowsSQL) name only the exceptions among cs[:look]:
// the changes of runs the statement did not write ('f'), the missing rows
// ('m'); and the number of rows written ('w'). Every other change found
// its row. Of cs[look:], the changes of the unwritten runs (the engine's
// Unwritten) were not written either.
func (mr *Mirror) foldDone(ctx context.Context, cs []*change, look int, rows []engine.CheckpointFoldRow, unwritten []string) {
	var written int64
	var skipped, missing map[string]bool
	for _, r := range rows {
		switch r.A {
		case "w":
			written, _ = strconv.ParseInt(r.B, 10, 64)
		case "f":
			// Its run's records were not written (a lost lease): nor was it.
			if skipped == nil {
				skipped = map[string]bool{}
			}
			skipped[r.B] = true
		case "m":
			if missing == nil {
				missing = map[string]bool{}
			}
			missing[r.B] = true
		}
	}
	var lost map[string]bool
	if len(unwritten) > 0 && look < len(cs) {
		lost = make(map[string]bool, len(unwritten))
		for _, r := range unwritten {
			lost[r] = true
		}
	}
	if mr.recent.max > 0 {
		for i, c := range cs {
			if skipped[c.Key] || (i >= look && lost[c.RunID]) {
				mr.recent.forget(c.Key)
			} else {
				v := mr.valsOf(c)
				mr.recent.committed(c, &v, i >= look, missing[c.Key])
			}
		}
	}
	cs = cs[:look]
	kept := cs
	if skipped != nil || missing != nil {
		kept = cs[:0:0]
		for _, c := range cs {
			if skipped[c.Key] {
				continue
			}
			if !missing[c.Key] {
				c.out |= outExists
			}
			kept = append(kept, c)
		}
	} else {
		for _, c := range cs {
			c.out |= outExists
		}
	}
	// settle counts the missing rows and warns of them (MissingFail does
	// not fold: nothing to refuse); the rows written are counted here.
	_ = mr.settle(ctx, kept, false)
	mr.met.wrote(ctx, written, 0, 0)
}
