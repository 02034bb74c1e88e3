package graftsync

import (
	"sync"
)

// A folded change that would leave every mapped column as the run's
// previous change left it is not looked up (see FoldCheckpoint). What the
// previous change left is known here when this process folded it and saw
// it commit, and nothing of the run has been written since by anyone
// else: the change's first event follows the remembered one (an event's
// Seq), and the run's engine records of the skipped changes are confirmed
// written too, by the engine (CheckpointFold.Unwritten names the runs it
// did not write: their lease went to another process, which may write the
// row). A legacy write to the row
// since then is judged at the run's next change that alters the row, as
// it would be had it come after this change.

// recentRows remembers, per row, the last folded change this process saw
// commit.
type recentRows struct {
	mu  sync.Mutex
	m   map[string]recentRow
	max int
}

// recentRow is what a row shows after a run's change: the run, the Seq of
// the change's last event and the mapped values.
type recentRow struct {
	run  string
	seq  int
	vals rowVals
}

// rowVals are the mapped values a row shows, as far as changes set them:
// a column no change of the run has set (the row keeps whatever it had)
// is unknown.
type rowVals struct {
	cells  [5]cell // status, step, error, attempts, progress
	extras []cell
}

// cell is one column's value: set says the row's value is known (and null
// says it is NULL, else v, or n for the attempts).
type cell struct {
	set, null bool
	n         int64
	v         string
}

// valsOf is what c sets (a cell c leaves as it is is not set).
func (mr *Mirror) valsOf(c *change) rowVals {
	var r rowVals
	str := func(i int, s *string) {
		if s != nil {
			r.cells[i] = cell{set: true, v: *s}
		}
	}
	if mr.m.Status != nil && !c.Weak {
		if v, ok := mr.m.Status.Values[c.now]; ok {
			r.cells[0] = cell{set: true, v: v}
		}
	}
	str(1, c.Step)
	switch {
	case c.Err != nil:
		str(2, c.Err)
	case c.ClearErr:
		r.cells[2] = cell{set: true, null: true}
	}
	if c.Attempts != nil {
		r.cells[3] = cell{set: true, n: *c.Attempts}
	}
	str(4, c.Progress)
	if len(c.Extras) > 0 {
		r.extras = make([]cell, len(mr.extras))
		for i, x := range c.Extras {
			if x != nil && i < len(r.extras) {
				r.extras[i] = cell{set: true, v: *x}
			}
		}
	}
	return r
}

// sameAs reports whether every cell set in r is set in was to the same
// value: r would change nothing in a row that shows was.
func (r *rowVals) sameAs(was *rowVals) bool {
	for i, c := range r.cells {
		if c.set && c != was.cells[i] {
			return false
		}
	}
	for i, c := range r.extras {
		if c.set && (i >= len(was.extras) || c != was.extras[i]) {
			return false
		}
	}
	return true
}

// over returns was with the cells set in r replaced.
func (r *rowVals) over(was *rowVals) rowVals {
	out := *was
	for i, c := range r.cells {
		if c.set {
			out.cells[i] = c
		}
	}
	if len(r.extras) > 0 {
		out.extras = make([]cell, len(r.extras))
		copy(out.extras, was.extras)
		for i, c := range r.extras {
			if c.set {
				out.extras[i] = c
			}
		}
	}
	return out
}

// unchanged reports whether c, a change of a run this process mirrors,
// would change nothing: the row's last folded change was the run's, its
// last event came just before c's first, and c sets nothing else.
func (rr *recentRows) unchanged(c *change, vals *rowVals) bool {
	if c.Weak || c.Started {
		return false
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	p, ok := rr.m[c.Key]
	return ok && p.run == c.RunID && p.seq+1 == c.seqFirst && vals.sameAs(&p.vals)
}

// committed records c, folded (looked up, or not when skipped) and
// committed with its run's records; missing says its row was not found.
func (rr *recentRows) committed(c *change, vals *rowVals, skipped, missing bool) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	p, ok := rr.m[c.Key]
	switch {
	case missing || c.Weak || c.Closed:
		delete(rr.m, c.Key)
		return
	case skipped:
		if ok && p.run == c.RunID && p.seq+1 == c.seqFirst {
			p.seq = c.seqLast
			rr.m[c.Key] = p
		}
		return
	}
	was := rowVals{}
	if ok && p.run == c.RunID && p.seq+1 == c.seqFirst {
		was = p.vals
	}
	if rr.m == nil {
		rr.m = map[string]recentRow{}
	}
	if !ok && len(rr.m) >= rr.max {
		for k := range rr.m { // a bounded memory: forget any one
			delete(rr.m, k)
			break
		}
	}
	rr.m[c.Key] = recentRow{run: c.RunID, seq: c.seqLast, vals: vals.over(&was)}
}

// forget drops what is remembered of the rows of cs: they were written
// otherwise (Checkpoint), or their runs' records were not.
func (rr *recentRows) forget(keys ...string) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for _, k := range keys {
		delete(rr.m, k)
	}
}
