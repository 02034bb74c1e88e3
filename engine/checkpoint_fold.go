package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/lib/pq"
)

// CheckpointFolder is a CheckpointInterceptor that can also write a batch
// of checkpoints inside the engine's own commit statement, instead of in a
// transaction of its own around it. The common batch (step records, run
// transitions, plain starts) is one statement; a CheckpointInterceptor
// turns it into four round trips (BEGIN, the statement, the interceptor's
// write, COMMIT), a folded write keeps it at one. Both are one transaction.
//
// The engine calls FoldCheckpoint for such a batch, before the statement
// runs. It uses the fold when every checkpoint interceptor gives one, and
// otherwise calls Checkpoint in a transaction as usual; FoldCheckpoint must
// therefore have no effect of its own. A fold cannot refuse the batch
// (its statement has committed when Done runs): an interceptor that may
// refuse, or that needs to see the batch's outcome first, returns
// ok=false, or has its function raise: when PostgreSQL refuses the folded
// statement (the fold's function raised, a lock timeout in it; not a lost
// connection), the engine writes the batch again the usual way, and
// Checkpoint decides.
type CheckpointFolder interface {
	CheckpointInterceptor
	// FoldCheckpoint returns the write of events to fold into the
	// statement, nil with ok=true when there is nothing to write, or
	// ok=false when Checkpoint must write them instead.
	FoldCheckpoint(ctx context.Context, events []*CheckpointEvent) (fold *CheckpointFold, ok bool)
}

// CheckpointFold is a write folded into the engine's commit statement: a
// call of a set-returning SQL function with two text columns in its result.
// The function receives Args, then a text array of the run IDs whose
// records the statement writes (a run may be named more than once):
// events of other runs (whose lease was lost, or whose start was refused)
// were not recorded and must not be mirrored.
// The function runs in the statement's snapshot and does not see the
// engine's own writes of it; an error it does not catch fails the
// statement (see CheckpointFolder).
type CheckpointFold struct {
	// Func is the function's qualified, quoted name. Its parameters are
	// len(Args) parameters and the text[] of written run IDs; their types
	// type the arguments.
	Func string
	// Args are the function's arguments, as for database/sql.
	Args []any
	// Done, when set, receives the function's rows once the statement has
	// committed, on the committer's goroutine: it must not block.
	Done func(ctx context.Context, rows []CheckpointFoldRow)
	// Unwritten, when set, is called before Done, on the same goroutine,
	// when the statement did not write the records of some of the batch's
	// events (their run's lease was lost, their start was refused), with
	// those events' run IDs; a run may be named more than once. It is
	// what the written runs the function receives tell, known in Go: a
	// fold can leave out of its arguments the events it only needs to
	// know the fate of.
	Unwritten func(runIDs []string)
}

// CheckpointFoldRow is one row a CheckpointFold's function returned (NULL
// as "").
type CheckpointFoldRow struct {
	A, B string
}

// foldCheckpoints asks the checkpoint interceptors to fold the events of
// batch; ok is false when one of them cannot (or panics), and the batch
// then goes through Checkpoint.
func (c *committer) foldCheckpoints(ctx context.Context, batch []*writeOp) (folds []*CheckpointFold, ok bool) {
	var evs []*CheckpointEvent
	for _, op := range batch {
		evs = append(evs, op.events...)
	}
	for _, h := range c.e.chains.checkpoint {
		f, isFolder := h.(CheckpointFolder)
		if !isFolder {
			return nil, false
		}
		fold, ok := callFold(ctx, f, evs)
		if !ok {
			return nil, false
		}
		if fold != nil {
			folds = append(folds, fold)
		}
	}
	return folds, true
}

// callFold calls one folder; a panic counts as ok=false (Checkpoint then
// gets its chance to fail the batch the documented way).
func callFold(ctx context.Context, f CheckpointFolder, evs []*CheckpointEvent) (fold *CheckpointFold, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			fold, ok = nil, false
		}
	}()
	return f.FoldCheckpoint(ctx, evs)
}

// foldDone hands each fold the runs whose events the statement did not
// record (unwritten, when there are any), then its rows (rows[i] for
// folds[i]).
func (c *committer) foldDone(ctx context.Context, folds []*CheckpointFold, rows [][]CheckpointFoldRow, unwritten []string) {
	for i, f := range folds {
		if f.Done == nil && (f.Unwritten == nil || len(unwritten) == 0) {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.e.cfg.Logger.Error("engine: a checkpoint fold's Done panicked", "func", f.Func,
						"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				}
			}()
			if f.Unwritten != nil && len(unwritten) > 0 {
				f.Unwritten(unwritten)
			}
			if f.Done != nil {
				f.Done(ctx, rows[i])
			}
		}()
	}
}

// unwrittenRuns returns the run IDs of the events of batch's ops whose
// records the statement did not write (errs, see execSingle): an op
// refused, or an op with events and nothing the statement writes (no
// step record, transition or run insert: its run is in none of the
// written CTEs); nil when there are none.
func unwrittenRuns(batch []*writeOp, errs []error) []string {
	var runs []string
	for i, op := range batch {
		if len(op.events) == 0 || (errs[i] == nil && (len(op.steps) > 0 || op.fin != nil || op.newRun != nil)) {
			continue
		}
		for _, ev := range op.events {
			runs = append(runs, ev.RunID)
		}
	}
	return runs
}

// foldKind prefixes the kind column of a fold's rows in the statement's
// result: "c<i>:" then the function's first column.
const foldKind = "c"

// foldTexts caches the statements with folds: the base statement with each
// fold's call appended, by base, functions and argument counts.
type foldTexts struct{ m sync.Map }

// foldKey keys foldTexts without copying base: one fold (the usual case) by
// its function and argument count, more by their joined signatures.
type foldKey struct {
	base, funcs string
	args        int
}

// text returns base with the folds' calls appended to its result, as
// further rows (kind, id, 0); base's parameters are $1..$n and its CTEs
// named in written return the run IDs it writes.
func (t *foldTexts) text(base string, n int, written []string, folds []*CheckpointFold) string {
	key := foldKey{base: base, args: -1}
	if len(folds) == 1 {
		key.funcs, key.args = folds[0].Func, len(folds[0].Args)
	} else {
		var k strings.Builder
		for _, f := range folds {
			k.WriteString("\x00" + f.Func + "\x00" + strconv.Itoa(len(f.Args)))
		}
		key.funcs = k.String()
	}
	if q, ok := t.m.Load(key); ok {
		return q.(string)
	}
	// UNION ALL: a run that the statement writes in two parts (a step and
	// its end) is named twice, which a function testing membership does
	// not mind; UNION's duplicate removal cost ~100 us a batch of ~100
	// runs, three times the array itself.
	var w strings.Builder
	w.WriteString("ARRAY(")
	for i, cte := range written {
		if i > 0 {
			w.WriteString(" UNION ALL ")
		}
		w.WriteString("SELECT run_id FROM " + cte)
	}
	w.WriteString(")::text[]")
	var b strings.Builder
	b.WriteString(base)
	p := n
	for i, f := range folds {
		fmt.Fprintf(&b, " UNION ALL SELECT '%s%d:' || COALESCE(c%d.a, ''), COALESCE(c%d.b, ''), 0 FROM %s(", foldKind, i, i, i, f.Func)
		for range f.Args {
			p++
			fmt.Fprintf(&b, "$%d, ", p)
		}
		fmt.Fprintf(&b, "%s) AS c%d(a, b)", w.String(), i)
	}
	q, _ := t.m.LoadOrStore(key, b.String())
	return q.(string)
}

// foldArgs appends the folds' arguments to args.
func foldArgs(args []any, folds []*CheckpointFold) []any {
	for _, f := range folds {
		args = append(args, f.Args...)
	}
	return args
}

// foldRow routes a result row of kind "c<i>:<a>" to rows[i]; it reports
// false for the statement's other rows.
func foldRow(rows [][]CheckpointFoldRow, kind, id string) bool {
	if len(rows) == 0 || !strings.HasPrefix(kind, foldKind) {
		return false
	}
	i, a, ok := strings.Cut(kind[len(foldKind):], ":")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(i)
	if err != nil || n < 0 || n >= len(rows) {
		return false
	}
	rows[n] = append(rows[n], CheckpointFoldRow{A: a, B: id})
	return true
}

// foldRefused reports whether a folded statement failed in a way that
// says it did not commit and that the usual way may go through: an error
// PostgreSQL returned (a fold's function raised, a lock timeout in it),
// not a lost connection or the commit's own timeout, whose outcome only a
// read-back can tell.
func foldRefused(ctx context.Context, err error) bool {
	var pe *pq.Error
	return err != nil && errors.As(err, &pe) && classify(err) != faultConnection && pe.Code != "57014" && ctx.Err() == nil
}
