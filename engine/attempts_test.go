package engine_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Every attempt of an activity step is kept: a step that fails twice and
// then succeeds shows three attempts in History, each with its number, its
// start and end in order, and the two failures' errors. A step that
// succeeds at once writes no attempt log at all.
func TestAttemptsKeptWithErrorsAndTimes(t *testing.T) {
	t.Parallel()
	flaky := engine.NewActivity("att.flaky", func(ctx context.Context, _ struct{}) (string, error) {
		if n := engine.ActivityInfoOf(ctx).Attempt; n < 3 {
			return "", engine.NewApplicationError("Flaky", fmt.Sprintf("failure %d", n), nil)
		}
		return "ok", nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 5}})
	once := engine.NewActivity("att.once", func(ctx context.Context, _ struct{}) (string, error) { return "once", nil })
	wf := engine.NewWorkflow("att.wf", func(ctx engine.Context, _ struct{}) (string, error) {
		a, err := once.Run(ctx, struct{}{})
		if err != nil {
			return "", err
		}
		b, err := flaky.Run(ctx, struct{}{})
		return a + "," + b, err
	})
	e, c := rbEnv(t, nil, flaky, once, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "att"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "once,ok", out)

	h, err := c.History(ctx, "att")
	require.NoError(t, err)
	require.Len(t, h[0].Steps, 2)
	first := h[0].Steps[0]
	require.Len(t, first.AttemptRecords, 1, "one attempt, from the step's own record")
	require.Equal(t, 1, first.AttemptRecords[0].Attempt)
	require.NoError(t, first.AttemptRecords[0].Error)

	st := h[0].Steps[1]
	require.Equal(t, 3, st.Attempts)
	require.Len(t, st.AttemptRecords, 3)
	for i, a := range st.AttemptRecords {
		require.Equal(t, i+1, a.Attempt)
		require.False(t, a.Lost)
		require.False(t, a.Snoozed)
		require.False(t, a.StartedAt.IsZero(), "attempt %d start", a.Attempt)
		require.False(t, a.EndedAt.IsZero(), "attempt %d end", a.Attempt)
		require.False(t, a.EndedAt.Before(a.StartedAt), "attempt %d ends after it starts", a.Attempt)
		if i > 0 {
			require.False(t, a.StartedAt.Before(st.AttemptRecords[i-1].EndedAt), "attempt %d starts after %d ended", a.Attempt, i)
		}
		if i < 2 {
			var app *engine.ApplicationError
			require.ErrorAs(t, a.Error, &app, "attempt %d", a.Attempt)
			require.Equal(t, "Flaky", app.Type)
			require.Equal(t, fmt.Sprintf("failure %d", i+1), app.Message)
			require.False(t, a.NextAttemptAt.IsZero(), "a failed attempt says when the next was due")
		} else {
			require.NoError(t, a.Error)
		}
	}

	// The hot path writes nothing extra: the step that succeeded at once
	// has no attempt log and no separate attempt start.
	var log, attStart, next sql.NullString
	require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT attempt_log::text, attempt_started_at::text, next_attempt_at::text FROM `+
		pq.QuoteIdentifier(e.Schema())+`.steps WHERE run_id = $1 AND seq = 1`, run.RunID).Scan(&log, &attStart, &next))
	require.False(t, log.Valid, "no attempt log for a first-attempt success")
	require.False(t, attStart.Valid)
	require.False(t, next.Valid)
}

// Defect 9: a provider outage (an activity that always fails, with a long
// backoff) in 50 runs does not fill the workflow slots of a worker that
// has 10: each run waiting for its next attempt further away than
// UnloadAfter records when it is due and unloads, so other workflows still
// run. Each waiting run is due (wake_at) when its step's next attempt is.
func TestBackoffUnloadsAndFreesSlots(t *testing.T) {
	t.Parallel()
	const backoff = time.Hour
	down := engine.NewActivity("outage.call", func(ctx context.Context, _ struct{}) (string, error) {
		return "", engine.NewApplicationError("ProviderDown", "the provider is down", nil)
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: backoff}})
	up := engine.NewActivity("outage.other", func(ctx context.Context, n int) (int, error) { return n, nil })
	stuck := engine.NewWorkflow("outage.stuck", func(ctx engine.Context, _ struct{}) (string, error) {
		return down.Run(ctx, struct{}{})
	})
	other := engine.NewWorkflow("outage.fine", func(ctx engine.Context, n int) (int, error) {
		return up.Run(ctx, n)
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(down, up, stuck, other))
	c := e.Client()
	ctx := testenv.Ctx(t, 60*time.Second)
	ids := rbIDs("outage", 50)
	for _, id := range ids {
		_, err := stuck.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: id})
		require.NoError(t, err)
	}
	testenv.Worker(t, e, engine.WorkerConfig{MaxWorkflows: 10})
	for i := 0; i < 5; i++ {
		run, err := other.Start(ctx, c, i, &engine.StartOptions{ID: fmt.Sprintf("fine-%d", i)})
		require.NoError(t, err)
		got, err := run.Result(ctx)
		require.NoError(t, err, "workflow %d starved", i)
		require.Equal(t, i, got)
	}
	for _, id := range ids {
		info := rbWaitStatus(t, c, id, engine.StatusWaiting)
		h, err := c.History(ctx, id)
		require.NoError(t, err)
		require.Len(t, h[0].Steps, 1)
		st := h[0].Steps[0]
		require.Equal(t, "retrying", st.Status)
		require.Equal(t, 1, st.Attempts)
		require.False(t, st.NextAttemptAt.IsZero())
		require.True(t, info.WakeAt.Equal(st.NextAttemptAt), "%s is due when its next attempt is", id)
		require.Greater(t, time.Until(st.NextAttemptAt), backoff/2)
		require.Len(t, st.AttemptRecords, 1)
		require.ErrorContains(t, st.AttemptRecords[0].Error, "the provider is down")
	}
}

// A limiter's snooze longer than UnloadAfter is recorded like a backoff:
// the step is throttled, the run unloads until the snooze ends, and no
// attempt is counted. When the engine's clock reaches it, the attempt
// runs as the first, and History shows the snooze with its reason before it.
func TestSnoozeRecordedAndUnloads(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(time.Now())
	var calls rbAttempts
	limited := engine.NewActivity("snooze.call", func(ctx context.Context, _ struct{}) (int, error) {
		if calls.add("call") == 1 {
			return 0, engine.Snooze(time.Hour, "provider acme: rate limit")
		}
		return engine.ActivityInfoOf(ctx).Attempt, nil
	})
	wf := engine.NewWorkflow("snooze.wf", func(ctx engine.Context, _ struct{}) (int, error) {
		return limited.Run(ctx, struct{}{})
	})
	_, c := rbEnv(t, &engine.Config{Clock: clock}, limited, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "snz"})
	require.NoError(t, err)
	info := rbWaitStatus(t, c, "snz", engine.StatusWaiting)
	h, err := c.History(ctx, "snz")
	require.NoError(t, err)
	require.Len(t, h[0].Steps, 1)
	st := h[0].Steps[0]
	require.Equal(t, "throttled", st.Status)
	require.Equal(t, 0, st.Attempts, "a snooze is not an attempt")
	require.True(t, info.WakeAt.Equal(st.NextAttemptAt))
	require.Len(t, st.AttemptRecords, 1)
	require.True(t, st.AttemptRecords[0].Snoozed)
	require.Equal(t, "provider acme: rate limit", st.AttemptRecords[0].Reason)

	clock.Advance(time.Hour)
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, got, "the attempt after a snooze is the first")
	h, err = c.History(ctx, "snz")
	require.NoError(t, err)
	st = h[0].Steps[0]
	require.Equal(t, "completed", st.Status)
	require.Len(t, st.AttemptRecords, 2)
	require.True(t, st.AttemptRecords[0].Snoozed)
	require.Equal(t, 1, st.AttemptRecords[1].Attempt)
	require.False(t, st.AttemptRecords[1].Snoozed)
	require.NoError(t, st.AttemptRecords[1].Error)
}

// Snoozes too short to unload the run for are not written on their own:
// the run stays loaded, and the record of a limiter's snoozes before an
// attempt starts (one for a streak of snoozes for one reason) goes with
// that attempt's start.
func TestShortSnoozesRideWithTheAttempt(t *testing.T) {
	t.Parallel()
	var tries rbAttempts
	limiter := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
		if tries.add("try") <= 3 {
			return nil, engine.Snooze(time.Millisecond, "provider acme: concurrency")
		}
		return next(ctx, in)
	})
	limited := engine.NewActivity("snooze.short", func(ctx context.Context, _ struct{}) (int, error) {
		return engine.ActivityInfoOf(ctx).Attempt, nil
	})
	wf := engine.NewWorkflow("snooze.shortwf", func(ctx engine.Context, _ struct{}) (int, error) {
		return limited.Run(ctx, struct{}{})
	})
	_, c := rbEnv(t, &engine.Config{Interceptors: []engine.Interceptor{limiter}}, limited, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "short"})
	require.NoError(t, err)
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, got, "snoozes count no attempt")
	h, err := c.History(ctx, "short")
	require.NoError(t, err)
	recs := h[0].Steps[0].AttemptRecords
	require.Len(t, recs, 2)
	require.True(t, recs[0].Snoozed)
	require.Equal(t, 3, recs[0].Snoozes, "a streak of snoozes is one record")
	require.Equal(t, "provider acme: concurrency", recs[0].Reason)
	require.Equal(t, 1, recs[1].Attempt)
	require.False(t, recs[1].Snoozed)
}
