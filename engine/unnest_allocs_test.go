package engine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCommitArgumentsAllocateLittle pins what building a commit's
// arguments allocates: the common commit of a run (an activity's outcome,
// the next one's start and the run's end) takes one argument per column,
// and each costs one allocation (its boxing into the argument list) plus a
// few for the batch. Before the columns shared one buffer, every column's
// own buffer grew two or three times, about 110 allocations for this
// commit, which at one workflow at a time was a tenth of the engine's CPU
// per workflow with the collector's share.
func TestCommitArgumentsAllocateLittle(t *testing.T) {
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	done := &stepRow{RunID: "run-1", Seq: 1, Kind: stepActivity, Name: "bench.noop", Status: stepCompleted,
		Output: []byte(`{"N":1}`), Attempts: 1, StartedAt: nullTime(now), CompletedAt: nullTime(now)}
	next := &stepRow{RunID: "run-1", Seq: 2, Kind: stepActivity, Name: "bench.noop", Status: stepStarted,
		Input: []byte(`{"N":1}`), Attempts: 1, StartedAt: nullTime(now)}
	owner := fence{"worker-1", 1}
	op := &writeOp{runID: "run-1", owner: owner.owner, token: owner.token,
		fin: &finishSpec{status: StatusCompleted, output: []byte(`{"N":3}`)}}
	steps, owners, batch, idx := []*stepRow{done, next}, []fence{owner, owner}, []*writeOp{op}, []int{0}
	var args []any
	var p paramBuf
	allocs := testing.AllocsPerRun(100, func() {
		args = stepArgs(p.start(stepParams+finishParams), &p, steps, owners, 0)
		args = finishArgs(args, &p, batch, idx, 0)
		p.sent(args)
	})
	// (sent cleared the list: built once more to be read)
	args = finishArgs(stepArgs(p.start(0), &p, steps, owners, 0), &p, batch, idx, 0)
	require.Len(t, args, len(stepCols)+len(finishCols))
	require.Equal(t, []byte(`{run-1,run-1}`), args[0])
	require.Equal(t, []byte(`{1,2}`), args[1])
	require.Equal(t, []byte(`{completed}`), args[len(stepCols)+2])
	// One boxing per column, and the rows and the writer of each of the two
	// batches: the argument list and the arrays' bytes are the writer's
	// (see paramBuf).
	require.LessOrEqual(t, allocs, float64(len(stepCols)+len(finishCols)+4), "allocations to build a commit's arguments")
	// Without a writer's memory, the list and each batch's buffer too.
	allocs = testing.AllocsPerRun(100, func() {
		args = stepArgs(make([]any, 0, stepParams+finishParams), nil, steps, owners, 0)
		args = finishArgs(args, nil, batch, idx, 0)
	})
	require.LessOrEqual(t, allocs, float64(1+len(stepCols)+len(finishCols)+6), "allocations to build a statement's arguments of its own")
	// The same commit as VALUES lists (a parameter per cell, see
	// unnestCols.from) boxes its non-NULL cells that are not small
	// integers instead of its columns: no more.
	allocs = testing.AllocsPerRun(100, func() {
		args = stepArgs(p.start(2*len(stepCols)+len(finishCols)), &p, steps, owners, 2)
		args = finishArgs(args, &p, batch, idx, 1)
		p.sent(args)
	})
	args = finishArgs(stepArgs(p.start(0), &p, steps, owners, 2), &p, batch, idx, 1)
	require.Len(t, args, 2*len(stepCols)+len(finishCols))
	require.Equal(t, []byte("run-1"), args[0])
	require.Equal(t, []byte("completed"), args[2*len(stepCols)+2])
	require.LessOrEqual(t, allocs, float64(len(stepCols)+len(finishCols)+4), "allocations to build a commit's arguments as VALUES lists")
}

// TestEmptyColumnsGoAsNull pins that a batch without rows sends each column
// as NULL (unnest reads no rows from it) and allocates nothing for it: sent
// as "{}", every empty column cost an allocation in lib/pq, which copies each
// non-NULL argument before sending it (46 a workflow of three activities at
// one workflow at a time).
func TestEmptyColumnsGoAsNull(t *testing.T) {
	args := make([]any, 0, len(finishCols))
	allocs := testing.AllocsPerRun(100, func() {
		args = finishArgs(args[:0], nil, nil, nil, 0)
	})
	require.Len(t, args, len(finishCols))
	for _, a := range args {
		require.Nil(t, a)
	}
	require.Zero(t, allocs, "allocations for the columns of an empty batch")
}
