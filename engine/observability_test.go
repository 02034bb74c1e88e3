package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type rbObsIn struct {
	Fail int // failing attempts before success; -1 fails for good
}

// rbObsEnv registers "obs.job" (one activity that fails in.Fail times, or
// for good when negative) and "obs.other" (a signal, then a short timer).
func rbObsEnv(t *testing.T) (*engine.Engine, *engine.Client, *engine.Workflow[rbObsIn, string], *engine.Workflow[string, string]) {
	t.Helper()
	act := engine.NewActivity("obs.work", func(ctx context.Context, in rbObsIn) (string, error) {
		a := engine.ActivityInfoOf(ctx).Attempt
		if in.Fail < 0 {
			return "", engine.NewNonRetryableError("Broken", "cannot do it", nil)
		}
		if a <= in.Fail {
			return "", engine.NewApplicationError("Flaky", fmt.Sprintf("attempt %d", a), nil)
		}
		return fmt.Sprintf("done after %d", a), nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 20 * time.Millisecond, BackoffCoefficient: 2}})
	job := engine.NewWorkflow("obs.job", func(ctx engine.Context, in rbObsIn) (string, error) {
		return act.Run(ctx, in)
	})
	other := engine.NewWorkflow("obs.other", func(ctx engine.Context, in string) (string, error) {
		note, err := engine.GetSignalChannel[string](ctx, "note").Receive(ctx)
		if err != nil {
			return "", err
		}
		if err := engine.Sleep(ctx, 10*time.Millisecond); err != nil {
			return "", err
		}
		return in + " " + note, nil
	})
	e, c := rbEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond}, act, job, other)
	return e, c, job, other
}

// Describe returns the latest run of an ID with its status, input, output,
// typed error, headers and timestamps; unknown IDs give ErrNotFound.
func TestObservabilityDescribe(t *testing.T) {
	t.Parallel()
	_, c, job, other := rbObsEnv(t)
	ctx := testenv.Ctx(t, 30*time.Second)

	_, err := c.Describe(ctx, "nobody")
	require.ErrorIs(t, err, engine.ErrNotFound)

	ok, err := job.Start(ctx, c, rbObsIn{Fail: 1}, &engine.StartOptions{ID: "ok", Headers: engine.Headers{"tenant": "acme"}})
	require.NoError(t, err)
	_, err = ok.Result(ctx)
	require.NoError(t, err)
	bad, err := job.Start(ctx, c, rbObsIn{Fail: -1}, &engine.StartOptions{ID: "bad"})
	require.NoError(t, err)
	_, err = bad.Result(ctx)
	require.Error(t, err)
	_, err = other.Start(ctx, c, "hello", &engine.StartOptions{ID: "open", Queue: "default"})
	require.NoError(t, err)

	info, err := c.Describe(ctx, "ok")
	require.NoError(t, err)
	require.Equal(t, "ok", info.WorkflowID)
	require.Equal(t, ok.RunID, info.RunID)
	require.Equal(t, "obs.job", info.WorkflowType)
	require.Equal(t, "default", info.Queue)
	require.Equal(t, engine.StatusCompleted, info.Status)
	require.JSONEq(t, `{"Fail":1}`, string(info.Input))
	require.JSONEq(t, `"done after 2"`, string(info.Output))
	require.NoError(t, info.Error)
	require.Equal(t, "acme", info.Headers["tenant"])
	require.False(t, info.CreatedAt.IsZero())
	require.False(t, info.ClosedAt.Before(info.CreatedAt))
	require.Equal(t, "start", info.StartReason)
	require.Equal(t, 1, info.Loads)

	info, err = c.Describe(ctx, "bad")
	require.NoError(t, err)
	require.Equal(t, engine.StatusFailed, info.Status)
	var app *engine.ApplicationError
	require.True(t, errors.As(info.Error, &app))
	require.Equal(t, "Broken", app.Type)
	require.Empty(t, info.Output)

	info = rbWaitStatus(t, c, "open", engine.StatusWaiting)
	require.True(t, info.ClosedAt.IsZero())
	require.True(t, info.WakeAt.IsZero(), "waiting for a signal, not a timer")
	require.NoError(t, info.Error)
}

// List filters by status, type and creation time, newest first, and
// honours the limit.
func TestObservabilityList(t *testing.T) {
	t.Parallel()
	_, c, job, other := rbObsEnv(t)
	ctx := testenv.Ctx(t, 30*time.Second)

	// Three generations of runs, each started after the previous closed or
	// unloaded, so their creation times are ordered.
	var created []time.Time
	for i, in := range []rbObsIn{{Fail: 0}, {Fail: 0}, {Fail: -1}} {
		r, err := job.Start(ctx, c, in, &engine.StartOptions{ID: fmt.Sprintf("job-%d", i)})
		require.NoError(t, err)
		_, _ = r.Result(ctx)
		info, err := c.Describe(ctx, r.WorkflowID)
		require.NoError(t, err)
		created = append(created, info.CreatedAt)
	}
	_, err := other.Start(ctx, c, "x", &engine.StartOptions{ID: "other-0"})
	require.NoError(t, err)
	rbWaitStatus(t, c, "other-0", engine.StatusWaiting)

	ids := func(f engine.ListFilter) []string {
		t.Helper()
		runs, err := c.List(ctx, f)
		require.NoError(t, err)
		var out []string
		for _, r := range runs {
			out = append(out, r.WorkflowID)
		}
		return out
	}
	require.Equal(t, []string{"other-0", "job-2", "job-1", "job-0"}, ids(engine.ListFilter{}), "newest first")
	require.Equal(t, []string{"job-1", "job-0"}, ids(engine.ListFilter{Statuses: []engine.Status{engine.StatusCompleted}}))
	require.Equal(t, []string{"job-2"}, ids(engine.ListFilter{Statuses: []engine.Status{engine.StatusFailed}}))
	require.Equal(t, []string{"other-0", "job-2"}, ids(engine.ListFilter{Statuses: []engine.Status{engine.StatusFailed, engine.StatusWaiting}}))
	require.Equal(t, []string{"other-0"}, ids(engine.ListFilter{Statuses: []engine.Status{engine.StatusRunning, engine.StatusWaiting, engine.StatusPending}}))
	require.Equal(t, []string{"job-2", "job-1", "job-0"}, ids(engine.ListFilter{WorkflowType: "obs.job"}))
	require.Equal(t, []string{"job-1", "job-0"}, ids(engine.ListFilter{WorkflowType: "obs.job", Statuses: []engine.Status{engine.StatusCompleted}}))
	require.Empty(t, ids(engine.ListFilter{WorkflowType: "obs.none"}))
	require.Equal(t, []string{"other-0", "job-2", "job-1"}, ids(engine.ListFilter{CreatedAfter: created[1]}), "CreatedAfter is inclusive")
	require.Equal(t, []string{"job-0"}, ids(engine.ListFilter{CreatedBefore: created[1]}), "CreatedBefore is exclusive")
	require.Equal(t, []string{"job-1"}, ids(engine.ListFilter{CreatedAfter: created[1], CreatedBefore: created[2]}))
	require.Equal(t, []string{"other-0", "job-2"}, ids(engine.ListFilter{Limit: 2}))

	_, err = c.List(ctx, engine.ListFilter{Limit: 10001})
	require.Error(t, err)
}

// History shows each run's steps with kind, name, status, attempts,
// timings, input, output and typed errors.
func TestObservabilityHistory(t *testing.T) {
	t.Parallel()
	_, c, job, other := rbObsEnv(t)
	ctx := testenv.Ctx(t, 30*time.Second)

	_, err := c.History(ctx, "nobody")
	require.ErrorIs(t, err, engine.ErrNotFound)

	flaky, err := job.Start(ctx, c, rbObsIn{Fail: 2}, &engine.StartOptions{ID: "flaky"})
	require.NoError(t, err)
	_, err = flaky.Result(ctx)
	require.NoError(t, err)
	h, err := c.History(ctx, "flaky")
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, flaky.RunID, h[0].Run.RunID)
	require.Equal(t, engine.StatusCompleted, h[0].Run.Status)
	require.Len(t, h[0].Steps, 1)
	st := h[0].Steps[0]
	require.Equal(t, 1, st.Seq)
	require.Equal(t, "activity", st.Kind)
	require.Equal(t, "obs.work", st.Name)
	require.Equal(t, "completed", st.Status)
	require.Equal(t, 3, st.Attempts)
	require.JSONEq(t, `{"Fail":2}`, string(st.Input))
	require.JSONEq(t, `"done after 3"`, string(st.Output))
	require.NoError(t, st.Error)
	require.False(t, st.StartedAt.IsZero())
	require.Equal(t, st.CompletedAt.Sub(st.StartedAt), st.Duration)
	require.GreaterOrEqual(t, st.Duration, 60*time.Millisecond, "two backoffs of 20ms and 40ms")

	broken, err := job.Start(ctx, c, rbObsIn{Fail: -1}, &engine.StartOptions{ID: "broken"})
	require.NoError(t, err)
	_, err = broken.Result(ctx)
	require.Error(t, err)
	h, err = c.History(ctx, "broken")
	require.NoError(t, err)
	st = h[0].Steps[0]
	require.Equal(t, "failed", st.Status)
	require.Equal(t, 1, st.Attempts)
	require.Empty(t, st.Output)
	var app *engine.ApplicationError
	require.True(t, errors.As(st.Error, &app))
	require.Equal(t, "Broken", app.Type)
	require.True(t, errors.As(h[0].Run.Error, &app))

	// A signal step and a timer step, in order.
	o, err := other.Start(ctx, c, "hi", &engine.StartOptions{ID: "sig"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "sig", "note", "there"))
	out, err := o.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "hi there", out)
	h, err = c.History(ctx, "sig")
	require.NoError(t, err)
	require.Len(t, h[0].Steps, 2)
	require.Equal(t, "signal", h[0].Steps[0].Kind)
	require.Equal(t, "note", h[0].Steps[0].Name)
	require.Equal(t, "completed", h[0].Steps[0].Status)
	var note string
	require.NoError(t, json.Unmarshal(h[0].Steps[0].Output, &note))
	require.Equal(t, "there", note)
	require.Equal(t, 2, h[0].Steps[1].Seq)
	require.Equal(t, "timer", h[0].Steps[1].Kind)

	// A second run of the ID appears after the first.
	again, err := job.Start(ctx, c, rbObsIn{}, &engine.StartOptions{ID: "flaky"})
	require.NoError(t, err)
	_, err = again.Result(ctx)
	require.NoError(t, err)
	h, err = c.History(ctx, "flaky")
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, flaky.RunID, h[0].Run.RunID)
	require.Equal(t, again.RunID, h[1].Run.RunID)
	require.Equal(t, 3, h[0].Steps[0].Attempts)
	require.Equal(t, 1, h[1].Steps[0].Attempts)
}
