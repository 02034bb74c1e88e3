package engine

import (
	"context"
)

// A write whose acknowledgement is lost (the connection dropped during
// COMMIT, or while a single-statement batch ran) may or may not have
// committed, and writing it again is no answer: a step already recorded, a
// run already finished or started would then be refused, as if the lease
// had been lost. So the committer reads back what the batch would have
// written. A batch commits whole or not at all, so one part found means all
// of it committed (and a part missing was refused by its fence); nothing
// found means nothing committed, and the batch is written again. That holds
// only if each part is found by what its own write leaves, never by a state
// the database may have held before (see store.written).

// readBack reports whether batch committed and, if so, each op's outcome.
// It retries while the database does not answer; when the engine stops
// first, the outcome stays unknown and the batch is treated as failed.
func (c *committer) readBack(batch []*writeOp) (bool, []error) {
	var q writtenQuery
	for _, op := range batch {
		q.steps = append(q.steps, op.steps...)
		if nr := op.newRun; nr != nil {
			q.runIDs = append(q.runIDs, nr.row.RunID)
			if nr.childStep != nil {
				q.steps = append(q.steps, nr.childStep)
			}
		}
		if op.fin != nil {
			q.fins = append(q.fins, op)
		}
	}
	var found written
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.CommitTimeout)
		var err error
		found, err = c.e.store.written(ctx, &q)
		cancel()
		if err == nil {
			break
		}
		if c.stopping() {
			c.e.cfg.Logger.Error("engine: commit outcome unknown at shutdown", "ops", len(batch), "err", err)
			return false, nil
		}
		c.e.cfg.Logger.Warn("engine: commit outcome unknown; reading back", "ops", len(batch), "attempt", attempt, "err", err)
		c.pause(attempt)
	}
	errs := make([]error, len(batch))
	committed := false
	for i, op := range batch {
		present := stepsFound(op.steps, found) ||
			(op.newRun != nil && found.runs[op.newRun.row.RunID]) ||
			(op.newRun != nil && op.newRun.childStep != nil && found.steps[stepKey{op.runID, op.newRun.childStep.Seq}]) ||
			(op.fin != nil && found.fins[op.runID])
		switch {
		case present:
			committed = true
		case op.newRun != nil && op.newRun.childStep == nil && op.fin == nil:
			errs[i] = ErrAlreadyStarted
		default:
			errs[i] = errLeaseLost
		}
	}
	return committed, errs
}

// stepsFound reports whether any of an op's step records is in the
// database as the op wrote it.
func stepsFound(steps []*stepRow, found written) bool {
	for _, st := range steps {
		if found.steps[stepKey{st.RunID, st.Seq}] {
			return true
		}
	}
	return false
}

// writtenQuery names what a batch writes. A step is matched with its status
// and attempt number too: an activity's row exists from its start on, and
// only its outcome (or a later attempt's start) tells this write apart.
type writtenQuery struct {
	steps  []*stepRow
	runIDs []string
	fins   []*writeOp // ops with a transition
}

// written is what of a writtenQuery the database holds.
type written struct {
	steps map[stepKey]bool
	runs  map[string]bool // new runs
	fins  map[string]bool // runs in the status a transition put them in
}
