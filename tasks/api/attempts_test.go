package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

type callIn struct {
	// Mode is "fail" (the first attempt fails) or "snooze" (the first try
	// is snoozed by the provider's limit for an hour).
	Mode string `json:"mode"`
}

// attemptsEnv is the API over an engine on a fake clock that also runs
// "renew": one call to a provider that fails or snoozes once, then
// succeeds, retried after an hour, at most 4 attempts.
func attemptsEnv(t *testing.T) (*env, *engine.FakeClock) {
	t.Helper()
	clock := engine.NewFakeClock(time.Now())
	e := testenv.Engine(t, &engine.Config{Clock: clock})
	var snoozed sync.Map
	call := engine.NewActivity("provider.call", func(ctx context.Context, in callIn) (string, error) {
		info := engine.ActivityInfoOf(ctx)
		switch in.Mode {
		case "fail":
			if info.Attempt == 1 {
				return "", engine.NewApplicationError("ProviderDown", "provider acme is down", nil)
			}
		case "snooze":
			if _, again := snoozed.LoadOrStore(info.Workflow.WorkflowID, true); !again {
				return "", engine.Snooze(time.Hour, "provider acme: rate limit")
			}
		}
		return fmt.Sprintf("done on attempt %d", info.Attempt), nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: time.Hour, MaximumAttempts: 4}})
	renew := engine.NewWorkflow("renew", func(ctx engine.Context, in callIn) (string, error) {
		return call.Run(ctx, in)
	})
	require.NoError(t, e.Register(call, renew))
	return newEnvOn(t, e, api.Config{}), clock
}

func (ev *env) startRenew(t *testing.T, id, mode string) {
	t.Helper()
	in, _ := json.Marshal(callIn{Mode: mode})
	res, err := ev.client(t, "operator").StartOperationWithResponse(t.Context(), api.StartRequest{
		Kind: "renew", Id: &id, Input: in, Customer: ptr("acme"), Reason: ptr("test")})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, res.StatusCode(), string(res.Body))
}

func (ev *env) get(t *testing.T, id string) api.Operation {
	t.Helper()
	res, err := ev.client(t, "viewer").GetOperationWithResponse(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode(), string(res.Body))
	return *res.JSON200
}

// attemptEvents returns the attempt events of id's history.
func (ev *env) attemptEvents(t *testing.T, id string) []api.HistoryEvent {
	t.Helper()
	res, err := ev.client(t, "viewer").GetOperationHistoryWithResponse(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode(), string(res.Body))
	var out []api.HistoryEvent
	for _, e := range res.JSON200.Events {
		if e.Type == "attempt" {
			out = append(out, e)
		}
	}
	return out
}

// An operation whose activity waits to retry after a failure is listed as
// retrying, one snoozed by a provider's limit as throttled, each counted;
// the now summary of each says attempt n of m, the next wake-up, the last
// error (or why it was throttled); the history has one attempt event per
// attempt with its start, end and error. Once the hour passes on the
// engine's clock, both complete and leave those lists.
func TestRetryingAndThrottledOperations(t *testing.T) {
	ev, clock := attemptsEnv(t)
	ev.start(t, "ok1", "acme", orderIn{Item: "1"})
	ev.waitFor(t, "ok1", engine.StatusCompleted)
	ev.startRenew(t, "r1", "fail")
	ev.startRenew(t, "t1", "snooze")
	// Each records its wait and unloads until the hour has passed.
	ev.waitFor(t, "r1", engine.StatusWaiting)
	ev.waitFor(t, "t1", engine.StatusWaiting)

	retrying := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterRetrying}})
	require.Equal(t, []string{"r1"}, ids(retrying))
	require.Contains(t, *retrying.Items[0].Conditions, api.CondRetrying)
	throttled := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterThrottled}})
	require.Equal(t, []string{"t1"}, ids(throttled))
	require.Contains(t, *throttled.Items[0].Conditions, api.CondThrottled)
	require.Equal(t, map[string]int64{"completed": 1, "waiting": 2, "retrying": 1, "throttled": 1}, retrying.Counts)
	both := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterRetrying, api.StatusFilterThrottled}})
	require.Equal(t, []string{"t1", "r1"}, ids(both))

	r := ev.get(t, "r1")
	require.Equal(t, "provider.call", *r.Now.CurrentStep)
	require.Equal(t, 2, *r.Now.Attempt, "waiting for attempt 2")
	require.Equal(t, 4, *r.Now.MaxAttempts)
	require.Equal(t, "retry", *r.Now.WaitingFor)
	require.NotNil(t, r.Now.NextWakeup)
	require.Greater(t, time.Until(*r.Now.NextWakeup), 50*time.Minute)
	require.NotNil(t, r.Now.LastError)
	require.Equal(t, "ProviderDown", *r.Now.LastError.Type)
	require.Equal(t, "provider acme is down", r.Now.LastError.Message)
	require.Equal(t, "provider.call", *r.Now.LastError.Step)

	tr := ev.get(t, "t1")
	require.Equal(t, 1, *tr.Now.Attempt, "a snooze is no attempt")
	require.Equal(t, "throttle", *tr.Now.WaitingFor)
	require.Equal(t, "provider acme: rate limit", *tr.Now.ThrottleReason)
	require.NotNil(t, tr.Now.NextWakeup)

	att := ev.attemptEvents(t, "r1")
	require.Len(t, att, 1)
	require.Equal(t, 1, *att[0].Attempt)
	require.Equal(t, "failed", *att[0].Status)
	require.NotNil(t, att[0].EndedAt)
	require.Equal(t, "ProviderDown", *att[0].Error.Type)

	clock.Advance(time.Hour)
	ev.waitFor(t, "r1", engine.StatusCompleted)
	ev.waitFor(t, "t1", engine.StatusCompleted)
	att = ev.attemptEvents(t, "r1")
	require.Len(t, att, 2, "one event per attempt")
	require.Equal(t, []int{1, 2}, []int{*att[0].Attempt, *att[1].Attempt})
	require.Equal(t, []string{"failed", "completed"}, []string{*att[0].Status, *att[1].Status})
	require.Nil(t, att[1].Error)
	require.False(t, att[1].At.Before(*att[0].EndedAt))
	att = ev.attemptEvents(t, "t1")
	require.Len(t, att, 2)
	require.Equal(t, "snoozed", *att[0].Status)
	require.Equal(t, "provider acme: rate limit", *att[0].Reason)
	require.Equal(t, "completed", *att[1].Status)
	require.Empty(t, ids(ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterRetrying, api.StatusFilterThrottled}})))
}

// The retrying and throttled filters read the few waiting steps through
// their partial index, not every run: with 200,000 operations, the list's
// plan and the counts' plan use steps_waiting.
func TestRetryingFilterUsesIndex(t *testing.T) {
	ev := newEnv(t, api.Config{})
	db, s := ev.e.DB(), `"`+ev.e.Schema()+`"`
	ctx := testenv.Ctx(t, 3*time.Minute)
	exec := func(q string, args ...any) {
		t.Helper()
		_, err := db.ExecContext(ctx, strings.ReplaceAll(q, "{s}", s), args...)
		require.NoError(t, err)
	}
	const n = 200000
	exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, created_at, closed_at)
		SELECT 'r' || i, 'w' || i, 'order', 'default', CASE WHEN i % 1000 = 0 THEN 'waiting' ELSE 'completed' END,
			now() - i * interval '1 second', CASE WHEN i % 1000 <> 0 THEN now() END
		FROM generate_series(1, $1) i`, n)
	exec(`INSERT INTO {s}.steps (run_id, seq, kind, name, status, attempts, next_attempt_at)
		SELECT 'r' || i, 1, 'activity', 'charge', CASE WHEN i % 1000 = 0 THEN 'retrying' ELSE 'completed' END, 1,
			CASE WHEN i % 1000 = 0 THEN now() + interval '1 hour' END
		FROM generate_series(1, $1) i`, n)
	exec(`ANALYZE {s}.runs`)
	exec(`ANALYZE {s}.steps`)
	for _, st := range []api.StatusFilter{api.StatusFilterRetrying, api.StatusFilterThrottled} {
		list, counts, args, err := api.ListQueriesForTest(ev.srv, api.ListOperationsParams{Status: &[]api.StatusFilter{st}})
		require.NoError(t, err)
		for name, q := range map[string]string{"list": list, "counts": counts} {
			var plan []string
			require.NoError(t, db.SelectContext(ctx, &plan, `EXPLAIN `+q, args...))
			text := strings.Join(plan, "\n")
			require.Contains(t, text, "steps_waiting", "%s %s plan:\n%s", st, name, text)
			t.Logf("%s %s plan:\n%s", st, name, text)
		}
	}
	page := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterRetrying}, Limit: ptr(10)})
	require.Len(t, page.Items, 10)
	require.Equal(t, []string{"w1000", "w2000"}, ids(page)[:2])
	require.EqualValues(t, n/1000, page.Counts[api.CondRetrying])
}
