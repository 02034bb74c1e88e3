package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A batch of a few ops takes the commit statement of exactly its parts; a
// larger one the statement with every part (with run inserts or without),
// so that load does not spread its commits over many statements, but the
// abandoned timers' only when a run it closes recorded a timer; a batch of
// starts only, whatever its size, the statement of run inserts.
func TestBatchShape(t *testing.T) {
	steps := func(run string) *writeOp {
		return &writeOp{runID: run, owner: "w", token: 1, steps: []*stepRow{{RunID: run, Seq: 1}}}
	}
	closing := &writeOp{runID: "c", owner: "w", token: 1, fin: &finishSpec{status: StatusCompleted}}
	closingTimer := &writeOp{runID: "t", owner: "w", token: 1, fin: &finishSpec{status: StatusCompleted, hasTimers: true}}
	start := &writeOp{runID: "n", newRun: &newRunSpec{row: runRow{RunID: "n"}}}
	for _, c := range []struct {
		batch []*writeOp
		want  commitShape
	}{
		{[]*writeOp{steps("a")}, shapeSteps},
		{[]*writeOp{closing}, shapeFin},
		{[]*writeOp{steps("a"), closing}, shapeSteps | shapeFin},
		{[]*writeOp{start}, shapeNews},
		{[]*writeOp{steps("a"), steps("b"), steps("c"), steps("d"), steps("e")}, shapeSteps | shapeFin},
		{[]*writeOp{steps("a"), steps("b"), steps("c"), steps("d"), start}, shapeAll &^ shapeTimers},
		{[]*writeOp{steps("a"), closingTimer}, shapeSteps | shapeFin | shapeTimers},
		{[]*writeOp{steps("a"), steps("b"), steps("c"), steps("d"), closingTimer}, shapeSteps | shapeFin | shapeTimers},
		{[]*writeOp{steps("a"), steps("b"), steps("c"), closingTimer, start}, shapeAll},
		{[]*writeOp{start, start, start, start, start}, shapeNews},
	} {
		require.Equal(t, c.want, newSingleWrite(c.batch, nil).shape(), "%d ops", len(c.batch))
	}
}
