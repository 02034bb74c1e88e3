package engine_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// TestOneWorkflowAtATimeAllocations counts what the process allocates for
// a workflow of three activities started and awaited one at a time (bench
// -c 1's shape), in a schema of its own: at one workflow at a time the
// collector's share of the Go CPU per workflow grows with it. Not parallel,
// so no other test's engine runs meanwhile. Before f1f0890 it counted 772 to
// 811 allocations (53-57 KB) a workflow; with that commit 673-678, and with
// batchSteps' scan of a small batch instead of a map and a slice per step,
// about 650 (48 KB); 602-604 at the start of session 10, and 572-577 with
// a commit's first two steps kept in its batchSteps and the statement's
// written steps marked there (no slices, no map of them per commit);
// 494-503 (40 KB) with activity attempts on a lazy context (attemptCtx)
// and the workflow's input and result handed over without JSON.
func TestOneWorkflowAtATimeAllocations(t *testing.T) {
	e := testenv.Engine(t, nil)
	type n struct{ N int }
	act := engine.NewActivity("allocs.noop", func(ctx context.Context, in n) (n, error) { return n{in.N + 1}, nil })
	wf := engine.NewWorkflow("allocs.three", func(ctx engine.Context, in n) (n, error) {
		v := in
		for range 3 {
			var err error
			if v, err = act.Run(ctx, v); err != nil {
				return v, err
			}
		}
		return v, nil
	})
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := e.Client()
	one := func(i int) {
		run, err := wf.Start(ctx, c, n{}, &engine.StartOptions{ID: fmt.Sprintf("a-%d", i)})
		require.NoError(t, err)
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, out.N)
	}
	for i := range 20 { // prepared statements, pools, the runs' goroutines
		one(i)
	}
	// The least of a few rounds: the engine's background work (lease and
	// roster renewals, polls) allocates by the clock, more a workflow the
	// slower the machine runs them.
	const rounds, runs = 5, 30
	best, bestKB := math.MaxFloat64, 0.0
	for r := range rounds {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := range runs {
			one(20 + r*runs + i)
		}
		runtime.ReadMemStats(&m1)
		if a := float64(m1.Mallocs-m0.Mallocs) / runs; a < best {
			best, bestKB = a, float64(m1.TotalAlloc-m0.TotalAlloc)/runs/1024
		}
	}
	t.Logf("allocs per workflow %.0f, %.1f KB", best, bestKB)
	if raceEnabled {
		t.Skip("the race detector changes what is allocated")
	}
	require.LessOrEqual(t, best, 530.0, "allocations per workflow")
}
