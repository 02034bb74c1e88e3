package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A parent runs children and waits for their results (in parallel too);
// a child's typed error reaches the parent; child IDs are stable.
func TestChildRunAndWait(t *testing.T) {
	t.Parallel()
	var calls ftCounter
	double := engine.NewActivity("child1.double", func(ctx context.Context, n int) (int, error) {
		calls.inc(fmt.Sprint(n))
		return 2 * n, nil
	})
	child := engine.NewWorkflow("child1.child", func(ctx engine.Context, n int) (int, error) {
		if n < 0 {
			return 0, engine.NewNonRetryableError("Negative", "negative input", n)
		}
		return double.Run(ctx, n)
	})
	parent := engine.NewWorkflow("child1.parent", func(ctx engine.Context, n int) (string, error) {
		a, err := child.RunChild(ctx, n, nil)
		if err != nil {
			return "", err
		}
		f1 := child.StartChild(ctx, a, nil)
		f2 := child.StartChild(ctx, a+1, &engine.ChildOptions{ID: "custom-child"})
		b, err := f1.Get(ctx)
		if err != nil {
			return "", err
		}
		c, err := f2.Get(ctx)
		if err != nil {
			return "", err
		}
		_, err = child.RunChild(ctx, -1, nil)
		var app *engine.ApplicationError
		if !errors.As(err, &app) || app.Type != "Negative" {
			return "", fmt.Errorf("want the child's Negative error, got %v", err)
		}
		return fmt.Sprintf("%d %d %d", a, b, c), nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, double, child, parent)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := parent.Start(ctx, c, 3, &engine.StartOptions{ID: "p1"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "6 12 14", out)
	for _, k := range []string{"3", "6", "7"} {
		require.Equal(t, 1, calls.get(k), "child activity for %s ran once", k)
	}
	info := ftDescribe(t, c, "p1/1")
	require.Equal(t, engine.StatusCompleted, info.Status)
	require.Equal(t, run.RunID, info.ParentRunID)
	require.Equal(t, engine.StatusCompleted, ftDescribe(t, c, "custom-child").Status)
	require.Equal(t, engine.StatusFailed, ftDescribe(t, c, "p1/4").Status)
	h, err := c.History(ctx, "p1")
	require.NoError(t, err)
	var children []string
	for _, st := range h[0].Steps {
		if st.Kind == "child" {
			children = append(children, st.ChildWorkflowID+":"+st.Status)
		}
	}
	require.Equal(t, []string{"p1/1:completed", "p1/2:completed", "custom-child:completed", "p1/4:failed"}, children)
}

// Cancelling a parent reaches the children it waits on (their activities'
// contexts are cancelled); a detached child keeps running, and a child
// left running when the parent completes is not waited for.
func TestChildCancellationAndDetached(t *testing.T) {
	t.Parallel()
	started := make(chan string, 4)
	blockUntilCancelled := engine.NewActivity("child2.block", func(ctx context.Context, who string) (string, error) {
		started <- who
		<-ctx.Done()
		return "", ctx.Err()
	})
	child := engine.NewWorkflow("child2.child", func(ctx engine.Context, who string) (string, error) {
		_, err := blockUntilCancelled.Run(ctx, who)
		return who, err
	})
	waiter := engine.NewWorkflow("child2.detachedwait", func(ctx engine.Context, who string) (string, error) {
		return engine.GetSignalChannel[string](ctx, "finish").Receive(ctx)
	})
	parent := engine.NewWorkflow("child2.parent", func(ctx engine.Context, _ struct{}) (string, error) {
		waiter.StartChild(ctx, "detached", &engine.ChildOptions{ID: "detached-child", Detached: true})
		return child.RunChild(ctx, "attached", &engine.ChildOptions{ID: "attached-child"})
	})
	_, c := ftEnv(t, nil, blockUntilCancelled, child, waiter, parent)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := parent.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "p2"})
	require.NoError(t, err)
	require.Equal(t, "attached", <-started)
	require.NoError(t, c.Cancel(ctx, "p2", "abort order"))
	_, err = run.Result(ctx)
	require.True(t, errors.Is(err, &engine.CanceledError{}), "got %v", err)
	ftWaitStatus(t, c, "attached-child", engine.StatusCancelled)
	require.True(t, ftDescribe(t, c, "attached-child").CancelRequested)
	detached := ftDescribe(t, c, "detached-child")
	require.True(t, detached.Status == engine.StatusWaiting || detached.Status == engine.StatusRunning, "detached child: %s", detached.Status)
	require.False(t, detached.CancelRequested)
	require.NoError(t, c.Signal(ctx, "detached-child", "finish", "done alone"))
	h, err := c.Handle(ctx, "detached-child")
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"done alone"`, string(out))
}

// A parent that starts a detached child and returns completes at once; the
// child runs on, and its later completion does not disturb the parent.
func TestChildStartAndLeaveRunning(t *testing.T) {
	t.Parallel()
	child := engine.NewWorkflow("child3.child", func(ctx engine.Context, n int) (int, error) {
		v, err := engine.GetSignalChannel[int](ctx, "go").Receive(ctx)
		return v + n, err
	})
	parent := engine.NewWorkflow("child3.parent", func(ctx engine.Context, _ struct{}) (string, error) {
		child.StartChild(ctx, 1, &engine.ChildOptions{ID: "bg-job", Detached: true})
		return "left it running", nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, child, parent)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := parent.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "p3"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "left it running", out)
	ftWaitUnloaded(t, c, "bg-job", 1)
	require.NoError(t, c.Signal(ctx, "bg-job", "go", 41))
	h, err := c.Handle(ctx, "bg-job")
	require.NoError(t, err)
	res, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, "42", string(res))
	require.Equal(t, engine.StatusCompleted, ftDescribe(t, c, "p3").Status)
}

// A child whose ID is taken by an open workflow fails the parent's step
// with a ChildAlreadyStarted error instead of hanging.
func TestChildIDConflict(t *testing.T) {
	t.Parallel()
	child := engine.NewWorkflow("child4.child", func(ctx engine.Context, _ struct{}) (int, error) {
		return engine.GetSignalChannel[int](ctx, "x").Receive(ctx)
	})
	parent := engine.NewWorkflow("child4.parent", func(ctx engine.Context, _ struct{}) (string, error) {
		_, err := child.RunChild(ctx, struct{}{}, &engine.ChildOptions{ID: "taken"})
		var app *engine.ApplicationError
		if errors.As(err, &app) {
			return app.Type, nil
		}
		return "", fmt.Errorf("want an ApplicationError, got %v", err)
	})
	_, c := ftEnv(t, nil, child, parent)
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := child.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "taken"})
	require.NoError(t, err)
	run, err := parent.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "p4"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "ChildAlreadyStarted", out)
}

// A child that continues as new reports to its parent only when the chain
// ends.
func TestChildContinueAsNew(t *testing.T) {
	t.Parallel()
	var counter *engine.Workflow[int, int]
	counter = engine.NewWorkflow("child5.counter", func(ctx engine.Context, n int) (int, error) {
		if n < 5 {
			return 0, engine.ContinueAsNew(ctx, counter, n+1)
		}
		return n * 10, nil
	})
	parent := engine.NewWorkflow("child5.parent", func(ctx engine.Context, _ struct{}) (int, error) {
		return counter.RunChild(ctx, 0, nil)
	})
	_, c := ftEnv(t, nil, counter, parent)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := parent.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "p5"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 50, out)
	h, err := c.History(ctx, "p5/1")
	require.NoError(t, err)
	require.Len(t, h, 6)
}
