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

// rbHang blocks until its context ends and returns the context's cause, so
// the engine's timeout reaches the activity as a typed error.
func rbHang(ctx context.Context) error {
	<-ctx.Done()
	return context.Cause(ctx)
}

// Each timeout kind fails the attempt with a *TimeoutError of that kind;
// when no attempt is left, the workflow's error is that TimeoutError, after
// persistence.
func TestTimeoutKinds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		opts         engine.ActivityOptions
		kind         engine.TimeoutKind
		wantAttempts int
		minElapsed   time.Duration
	}{
		{"start to close", engine.ActivityOptions{StartToCloseTimeout: 100 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 2}},
			engine.TimeoutStartToClose, 2, 200 * time.Millisecond},
		// Unlimited retries of 50ms attempts: only the schedule-to-close
		// bound ends them.
		{"schedule to close", engine.ActivityOptions{StartToCloseTimeout: 50 * time.Millisecond, ScheduleToCloseTimeout: 400 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}},
			engine.TimeoutScheduleToClose, -1, 250 * time.Millisecond},
		{"schedule to close without start to close", engine.ActivityOptions{ScheduleToCloseTimeout: 200 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond}},
			engine.TimeoutScheduleToClose, 1, 200 * time.Millisecond},
		{"heartbeat", engine.ActivityOptions{StartToCloseTimeout: time.Minute, HeartbeatTimeout: 100 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 2}},
			engine.TimeoutHeartbeat, 2, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var log rbAttempts
			causes := make(chan error, 100)
			act := engine.NewActivity("timeout.hang", func(ctx context.Context, _ struct{}) (string, error) {
				log.add("hang")
				err := rbHang(ctx)
				causes <- err
				return "", err
			})
			wf := engine.NewWorkflow("timeout.kinds", func(ctx engine.Context, _ struct{}) (string, error) {
				return act.RunWith(ctx, &tc.opts, struct{}{})
			})
			_, c := rbEnv(t, nil, act, wf)
			ctx := testenv.Ctx(t, 30*time.Second)
			t0 := time.Now()
			run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "to"})
			require.NoError(t, err)
			_, err = run.Result(ctx)
			elapsed := time.Since(t0)
			var to *engine.TimeoutError
			require.True(t, errors.As(err, &to), "want a TimeoutError, got %T: %v", err, err)
			require.Equal(t, tc.kind, to.Kind)
			require.GreaterOrEqual(t, elapsed, tc.minElapsed)

			n := log.count("hang")
			if tc.wantAttempts > 0 {
				require.Equal(t, tc.wantAttempts, n)
			} else {
				require.GreaterOrEqual(t, n, 2, "retried until the schedule-to-close bound")
			}
			// The activity saw the timeout as its context's cause.
			var first *engine.TimeoutError
			require.True(t, errors.As(<-causes, &first))
			if tc.kind == engine.TimeoutScheduleToClose && n > 1 {
				require.Equal(t, engine.TimeoutStartToClose, first.Kind, "early attempts end by start-to-close")
			} else {
				require.Equal(t, tc.kind, first.Kind)
			}

			h, err := c.History(ctx, "to")
			require.NoError(t, err)
			st := h[0].Steps[0]
			require.Equal(t, "failed", st.Status)
			require.Equal(t, n, st.Attempts)
			require.True(t, errors.As(st.Error, &to))
			require.Equal(t, tc.kind, to.Kind)
		})
	}
}

// An attempt that times out (start-to-close) is retried, and the retry can
// succeed.
func TestTimeoutStartToCloseThenRetrySucceeds(t *testing.T) {
	t.Parallel()
	act := engine.NewActivity("timeout.once", func(ctx context.Context, _ struct{}) (int, error) {
		if a := engine.ActivityInfoOf(ctx).Attempt; a > 1 {
			return a, nil
		}
		return 0, rbHang(ctx)
	})
	wf := engine.NewWorkflow("timeout.retry", func(ctx engine.Context, _ struct{}) (int, error) {
		return act.RunWith(ctx, &engine.ActivityOptions{StartToCloseTimeout: 100 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 3}}, struct{}{})
	})
	_, c := rbEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, nil)
	require.NoError(t, err)
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, got)
}

type rbProgress struct{ Done int }

// An activity that stops heartbeating fails with a heartbeat timeout; the
// retry reads the details the failed attempt last recorded and resumes from
// them. The first attempt sees no details.
func TestTimeoutHeartbeatDetailsReachRetry(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 10)
	act := engine.NewActivity("timeout.hb", func(ctx context.Context, total int) (int, error) {
		prev, ok := engine.HeartbeatDetails[rbProgress](ctx)
		seen <- fmt.Sprintf("attempt %d: %v %+v", engine.ActivityInfoOf(ctx).Attempt, ok, prev)
		for i := prev.Done + 1; i <= total; i++ {
			engine.Heartbeat(ctx, rbProgress{Done: i})
			if engine.ActivityInfoOf(ctx).Attempt == 1 && i == 3 {
				// Stuck after item 3: no more heartbeats.
				return 0, rbHang(ctx)
			}
		}
		return prev.Done, nil
	})
	wf := engine.NewWorkflow("timeout.hbwf", func(ctx engine.Context, total int) (int, error) {
		return act.RunWith(ctx, &engine.ActivityOptions{StartToCloseTimeout: time.Minute, HeartbeatTimeout: 100 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 2}}, total)
	})
	_, c := rbEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, 10, &engine.StartOptions{ID: "hb"})
	require.NoError(t, err)
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, got, "the retry resumed after the third item")
	require.Equal(t, "attempt 1: false {Done:0}", <-seen)
	require.Equal(t, "attempt 2: true {Done:3}", <-seen)
}

// When the heartbeat timeout is final, the workflow's TimeoutError carries
// the last heartbeat details.
func TestTimeoutHeartbeatDetailsInFinalError(t *testing.T) {
	t.Parallel()
	act := engine.NewActivity("timeout.hbfinal", func(ctx context.Context, _ struct{}) (int, error) {
		engine.Heartbeat(ctx, rbProgress{Done: 7})
		return 0, rbHang(ctx)
	})
	wf := engine.NewWorkflow("timeout.hbfinalwf", func(ctx engine.Context, _ struct{}) (int, error) {
		return act.RunWith(ctx, &engine.ActivityOptions{HeartbeatTimeout: 100 * time.Millisecond,
			RetryPolicy: &engine.RetryPolicy{MaximumAttempts: 1}}, struct{}{})
	})
	_, c := rbEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var to *engine.TimeoutError
	require.True(t, errors.As(err, &to), "want a TimeoutError, got %T: %v", err, err)
	require.Equal(t, engine.TimeoutHeartbeat, to.Kind)
	var p rbProgress
	require.NoError(t, json.Unmarshal(to.HeartbeatDetails, &p))
	require.Equal(t, 7, p.Done)
}
