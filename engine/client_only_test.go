package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// A process that runs no workflow (an API, a CLI) gets a Client from one
// DSN: it starts a workflow it never registered, signals it, queries it
// (given the definition) and waits for its result.
func TestNewClientWithoutEngine(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("clientonly.greet", func(ctx engine.Context, name string) (string, error) {
		engine.SetQueryFunc(ctx, "name", func() (string, error) { return name, nil })
		greeting, err := engine.GetSignalChannel[string](ctx, "greeting").Receive(ctx)
		return greeting + ", " + name, err
	})
	e := grafttest.NewEngine(t) // the workers' process
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	ctx := grafttest.Context(t, time.Minute)

	_, err := engine.NewClient(engine.ClientConfig{Schema: e.Schema()})
	require.ErrorContains(t, err, "ClientConfig.DatabaseURL is required")

	c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: grafttest.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	run, err := wf.Start(ctx, c, "Ada", &engine.StartOptions{ID: "greet"})
	require.NoError(t, err)
	// A query replays the run with the workflow's code, which this client
	// was not given.
	_, err = c.Query(ctx, "greet", "name", nil)
	require.ErrorIs(t, err, engine.ErrUnknownWorkflow)

	q, err := engine.NewClient(engine.ClientConfig{DatabaseURL: grafttest.DatabaseURL(), DB: grafttest.DB(t),
		Schema: e.Schema(), Workflows: []engine.Definition{wf}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, q.Close()) })
	grafttest.Eventually(t, func() bool {
		name, err := engine.QueryAs[string](ctx, q, "greet", "name", nil)
		return err == nil && name == "Ada"
	}, "query from a client-only process")

	require.NoError(t, c.Signal(ctx, "greet", "greeting", "Hello"))
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "Hello, Ada", got)
	require.NoError(t, q.Close()) // closing twice is harmless; the shared pool stays open
	require.NoError(t, grafttest.DB(t).PingContext(ctx))
}
