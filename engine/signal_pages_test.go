package engine_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A run with 100,000 unread signals is not loaded with all of them: the
// claim reads one page, and further pages are read as the workflow reads
// signals, in order, however far behind the others the one it waits for is.
func TestUnreadSignalsLoadedInPages(t *testing.T) {
	t.Parallel()
	const flood = 100000
	wf := engine.NewWorkflow("sig.flood", func(ctx engine.Context, _ struct{}) ([]int, error) {
		var out []int
		for i := 0; i < 3; i++ {
			v, err := engine.GetSignalChannel[int](ctx, "n").Receive(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		v, err := engine.GetSignalChannel[int](ctx, "last").Receive(ctx)
		return append(out, v), err
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(wf))
	var mu sync.Mutex
	var loads []int
	engine.SetSignalLoadHookForTest(e, func(n int) {
		mu.Lock()
		loads = append(loads, n)
		mu.Unlock()
	})
	ctx := testenv.Ctx(t, 2*time.Minute)
	c := e.Client()
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "flood"})
	require.NoError(t, err)
	// The signals arrive before any worker claims the run: 100,000 of
	// name "n" (payloads 1, 2, 3, ...), then one "last".
	s := `"` + e.Schema() + `"`
	_, err = e.DB().ExecContext(ctx, `INSERT INTO `+s+`.signals (run_id, name, payload)
		SELECT $1, 'n', convert_to(i::text, 'UTF8') FROM generate_series(1, $2) i`, run.RunID, flood)
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "flood", "last", 7))

	testenv.Worker(t, e, engine.WorkerConfig{})
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3, 7}, out)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, loads)
	for _, n := range loads {
		require.LessOrEqual(t, n, 1000, "one read of the run's signals loaded %d", n)
	}
	require.Equal(t, 1000, loads[0], "the claim reads one page")
}
