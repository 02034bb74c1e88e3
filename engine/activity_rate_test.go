package engine_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// WorkerConfig.ActivitiesPerSecond holds a worker's attempt starts to the
// rate: between any two starts there were no more than the burst plus the
// rate times the time between them. (A slow machine only spreads starts out,
// so this bound cannot fail for want of speed.)
func TestActivitiesPerSecondBoundsStarts(t *testing.T) {
	t.Parallel()
	const rate, calls = 10, 25
	var (
		mu     sync.Mutex
		starts []time.Time
	)
	act := engine.NewActivity("rated", func(ctx context.Context, i int) (int, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return i, nil
	})
	wf := engine.NewWorkflow("rated.fan", func(ctx engine.Context, n int) (int, error) {
		fs := make([]engine.Future[int], n)
		for i := range fs {
			fs[i] = act.Start(ctx, i)
		}
		sum := 0
		for _, f := range fs {
			v, err := f.Get(ctx)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{ActivitiesPerSecond: rate})
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, e.Client(), calls, nil)
	require.NoError(t, err)
	sum, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, calls*(calls-1)/2, sum)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, starts, calls)
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	const burst, slack = rate, 10 * time.Millisecond
	for i := range starts {
		for j := i + burst; j < len(starts); j++ {
			// starts i..j are j-i+1 tokens; burst of them were in the bucket.
			need := time.Duration(float64(j-i+1-burst) / rate * float64(time.Second))
			require.GreaterOrEqual(t, starts[j].Sub(starts[i])+slack, need,
				"starts %d..%d came faster than %d/s with a burst of %d", i, j, rate, burst)
		}
	}
}
