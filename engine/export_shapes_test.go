package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// CommitShapesForTest returns the names of the commit statement's shapes
// (see commitShapes), each also as "<shape>/arrays": CommitShapeForTest
// then writes its rows as arrays, as a batch of more ops or rows does,
// where otherwise each part's one row goes as a VALUES list.
func CommitShapesForTest() []string {
	var names []string
	for name := range commitShapes() {
		names = append(names, name, name+"/arrays")
	}
	slices.Sort(names)
	return names
}

// CommitShapeForTest commits, in the commit statement of the named shape,
// what that shape writes: for the run runID under the fence (owner, token),
// an activity's outcome (steps) and the run's close (fin; timers: the run
// recorded a timer); and the insert of an eagerly started run newID leased
// to owner (news) with its first step (new_steps). It returns the errors
// the committer reports for the two ops (the first nil when the shape has
// no steps or fin, the second when it has no news).
func CommitShapeForTest(ctx context.Context, e *Engine, shape, runID, newID, owner string, token int) (old, started error, err error) {
	shape, arrays := strings.CutSuffix(shape, "/arrays")
	sh, ok := commitShapes()[shape]
	if !ok {
		return nil, nil, fmt.Errorf("no shape %q", shape)
	}
	if arrays {
		e.store.arraysOnly.Store(true)
		defer e.store.arraysOnly.Store(false)
	}
	now := time.Now()
	step := func(run string, status string) *stepRow {
		return &stepRow{RunID: run, Seq: 1, Kind: stepActivity, Name: "shape", Status: status, Input: []byte(`1`),
			Output: []byte(`2`), Attempts: 1, StartedAt: nullTime(now), CompletedAt: nullTime(now)}
	}
	var batch []*writeOp
	if sh&(shapeSteps|shapeFin) != 0 {
		op := &writeOp{runID: runID, owner: owner, token: token}
		if sh&shapeSteps != 0 {
			op.steps = []*stepRow{step(runID, stepCompleted)}
		}
		if sh&shapeFin != 0 {
			op.fin = &finishSpec{status: StatusCompleted, output: []byte(`2`), hasTimers: sh&shapeTimers != 0}
		}
		batch = append(batch, op)
	}
	if sh&shapeNews != 0 {
		op := &writeOp{runID: newID, owner: owner, token: 1, newRun: &newRunSpec{
			row:   runRow{RunID: newID, WorkflowID: newID, WorkflowType: "shape", Queue: "shape", Input: []byte(`1`), StartReason: "start"},
			reuse: ReuseAllowDuplicate, leaseOwner: owner}}
		if sh&shapeNewSteps != 0 {
			op.steps = []*stepRow{step(newID, stepStarted)}
		}
		batch = append(batch, op)
	}
	if got := newSingleWrite(batch, nil).shape(); got != sh {
		return nil, nil, fmt.Errorf("shape %q: the batch takes shape %b", shape, got)
	}
	errs, err := e.commit.execSingle(ctx, &paramBuf{}, now, batch, false, nil)
	if err != nil {
		return nil, nil, err
	}
	if sh&(shapeSteps|shapeFin) != 0 {
		old, errs = errs[0], errs[1:]
	}
	if sh&shapeNews != 0 {
		started = errs[0]
	}
	return old, started, nil
}
