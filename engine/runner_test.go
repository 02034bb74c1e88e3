package engine_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A worker's next run goes to the goroutine of a run that has ended, when
// one waits, instead of a new goroutine: that goroutine's stack has grown
// to what a run needs already, where a new one copies its stack as it grows.
// The workflow returns the ID of the goroutine that runs it.
func TestNextRunTakesAnEndedRunsGoroutine(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("runner.goroutine", func(ctx engine.Context, _ struct{}) (string, error) {
		buf := make([]byte, 64)
		return strings.Fields(string(buf[:runtime.Stack(buf, false)]))[1], nil // "goroutine <id> [running]:"
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(wf))
	w := testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	run := func(id string) string {
		r, err := wf.Start(ctx, e.Client(), struct{}{}, &engine.StartOptions{ID: id})
		require.NoError(t, err)
		g, err := r.Result(ctx)
		require.NoError(t, err)
		return g
	}
	first := run("first")
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.IdleRunnersForTest(w) == 1 },
		"the first run's goroutine never waited for a next run")
	require.Equal(t, first, run("second"), "the second run did not run on the first one's goroutine")
}
