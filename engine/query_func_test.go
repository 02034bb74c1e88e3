package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// A query handler may take no argument; an argument sent anyway is ignored.
func TestQueryFuncWithoutArgument(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("queryfunc.wait", func(ctx engine.Context, _ struct{}) (string, error) {
		stage := "waiting"
		engine.SetQueryFunc(ctx, "stage", func() (string, error) { return stage, nil })
		v, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
		stage = "got " + v
		return stage, err
	})
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "qf"})
	require.NoError(t, err)

	grafttest.Eventually(t, func() bool {
		s, err := engine.QueryAs[string](ctx, c, "qf", "stage", nil)
		return err == nil && s == "waiting"
	}, "stage answered without an argument")
	s, err := engine.QueryAs[string](ctx, c, "qf", "stage", map[string]int{"ignored": 1})
	require.NoError(t, err)
	require.Equal(t, "waiting", s)

	require.NoError(t, c.Signal(ctx, "qf", "go", "now"))
	_, err = run.Result(ctx)
	require.NoError(t, err)
	s, err = engine.QueryAs[string](ctx, c, "qf", "stage", nil)
	require.NoError(t, err)
	require.Equal(t, "got now", s)
}
