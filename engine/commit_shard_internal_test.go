package engine

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func newTestShard() *commitShard {
	sh := &commitShard{ready: make(chan struct{}, 1), space: make(chan struct{}, 16)}
	sh.idle = sync.NewCond(&sh.mu)
	return sh
}

// writeBatchOf queues n ops on sh and takes them as the loop does.
func writeBatchOf(t *testing.T, sh *commitShard, n int) {
	t.Helper()
	for range n {
		require.NoError(t, sh.enqueue(context.Background(), &writeOp{}))
	}
	require.Len(t, sh.take(100), n)
	sh.doneWriting()
}

// After a batch of several ops, the runs it carried submit their next ops
// as they wake: the first must queue with the others rather than find the
// shard idle and commit its op alone. A shard writes in place again once a
// batch of one shows the load has gone.
func TestShardQueuesAfterBatchOfSeveral(t *testing.T) {
	sh := newTestShard()
	require.True(t, sh.claim(), "an idle shard that has written nothing is written in place")
	sh.release()
	require.True(t, sh.claim(), "after a write in place, the next is in place too")
	sh.release()

	writeBatchOf(t, sh, 3)
	require.False(t, sh.claim(), "after a batch of three the next op queues")

	writeBatchOf(t, sh, 1)
	require.True(t, sh.claim(), "after a batch of one the shard is written in place again")
	sh.release()
}

// The loop gathers the ops of the runs its last batch woke before it takes
// the next: on one core, they have not run yet when it wakes.
func TestShardGathersWokenSubmitters(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	sh := newTestShard()
	writeBatchOf(t, sh, 3)
	require.NoError(t, sh.enqueue(context.Background(), &writeOp{}))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _ = sh.enqueue(context.Background(), &writeOp{}) })
	}
	sh.gather()
	require.Len(t, sh.take(100), 3, "the woken runs' ops are taken together")
	wg.Wait()
}

// A client's starts go through the first shard while the process's loaded
// runs are not spread over its shards: a process that only starts
// workflows makes one writer's larger commits. Past that they are hashed
// over all the shards, as the runs are spread.
func TestClientWritesUseOneShardUntilSpread(t *testing.T) {
	c := &committer{e: &Engine{}, shards: []*commitShard{newTestShard(), newTestShard()}}
	for i := range 20 {
		require.Same(t, c.shards[0], c.shard(&writeOp{runID: fmt.Sprint("run", i)}))
	}
	c.shards[0].runs.Store(shardRuns) // one live worker's share: spread
	seen := map[*commitShard]bool{}
	for i := range 20 {
		seen[c.shard(&writeOp{runID: fmt.Sprint("run", i)})] = true
	}
	require.Len(t, seen, 2, "past the threshold the starts are hashed over the shards")
}
