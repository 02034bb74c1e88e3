package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type greetIn struct{ Name string }

func TestSmokeThreeActivities(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	hello := engine.NewActivity("hello", func(ctx context.Context, in greetIn) (string, error) { return "hello " + in.Name, nil })
	wf := engine.NewWorkflow("greet", func(ctx engine.Context, in greetIn) (string, error) {
		a, err := hello.Run(ctx, in)
		if err != nil {
			return "", err
		}
		f1 := hello.Start(ctx, greetIn{Name: "x"})
		f2 := hello.Start(ctx, greetIn{Name: "y"})
		b, err := f1.Get(ctx)
		if err != nil {
			return "", err
		}
		c, err := f2.Get(ctx)
		return a + "|" + b + "|" + c, err
	})
	require.NoError(t, e.Register(hello, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, e.Client(), greetIn{Name: "bob"}, &engine.StartOptions{ID: "g1"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "hello bob|hello x|hello y", out)
	h, err := e.Client().History(ctx, "g1")
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Len(t, h[0].Steps, 3)
	require.Equal(t, engine.StatusCompleted, h[0].Run.Status)
}
