package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// A worker woken for runs that are due now does not read the next wake time
// again when another worker took them; a start from another process that is
// due later must still make it read it. The worker polls once a minute
// here, so only that reading can run the delayed workflow within the
// test's deadline.
func TestDelayedStartFromAnotherProcessIsSeenBeforeThePoll(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("notice.echo", func(ctx engine.Context, in int) (int, error) { return in, nil })
	e := grafttest.NewEngine(t, engine.Config{PollInterval: time.Minute}) // the workers' process
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	ctx := grafttest.Context(t, time.Minute)

	c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: grafttest.DatabaseURL(), DB: grafttest.DB(t), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })

	// Runs due now, announced as such, are claimed at once.
	for i := range 3 {
		run, err := wf.Start(ctx, c, i, nil)
		require.NoError(t, err)
		got, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, i, got)
	}
	// A delayed one is announced without the mark: the worker's claim finds
	// nothing due, and it reads when the run will be.
	run, err := wf.Start(ctx, c, 7, &engine.StartOptions{Delay: 300 * time.Millisecond})
	require.NoError(t, err)
	wctx := grafttest.Context(t, 30*time.Second)
	got, err := run.Result(wctx)
	require.NoError(t, err, "the delayed run did not run before the worker's poll")
	require.Equal(t, 7, got)
}
