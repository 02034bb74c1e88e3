package api_test

import (
	"context"
	"encoding/csv"
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

// bulk posts a bulk request as role and decodes the answer into out.
func (ev *env) bulk(t *testing.T, role string, req map[string]any, want int, out any) string {
	t.Helper()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	code, body := ev.do(t, role, "POST", "/v1/bulk", string(b))
	require.Equal(t, want, code, body)
	if out != nil {
		require.NoError(t, json.Unmarshal([]byte(body), out))
	}
	return body
}

func (ev *env) job(t *testing.T, role, id string) api.BulkJob {
	t.Helper()
	code, body := ev.do(t, role, "GET", "/v1/bulk/"+id, "")
	require.Equal(t, 200, code, body)
	var j api.BulkJob
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	return j
}

// report reads job id's report, as JSON.
func (ev *env) report(t *testing.T, id string) api.BulkReport {
	t.Helper()
	code, body := ev.do(t, "viewer", "GET", "/v1/bulk/"+id+"/report", "")
	require.Equal(t, 200, code, body)
	var rep api.BulkReport
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	return rep
}

// waitJob waits until job id is in state.
func (ev *env) waitJob(t *testing.T, id string, state api.BulkState) api.BulkJob {
	t.Helper()
	var j api.BulkJob
	testenv.Eventually(t, 60*time.Second, func() bool {
		j = ev.job(t, "viewer", id)
		return j.State == state
	}, "bulk job %s to be %s (is %+v)", id, state, &j)
	return j
}

// checkProgress checks that job id's counts, as the API reads them (from
// the job's progress counters), are its items' states.
func (ev *env) checkProgress(t *testing.T, id string) {
	t.Helper()
	j := ev.job(t, "viewer", id)
	rows, err := ev.e.DB().Query(`SELECT state, count(*) FROM `+ev.e.Schema()+`.bulk_items WHERE job_id = $1 GROUP BY state`, id)
	require.NoError(t, err)
	defer rows.Close()
	items := map[string]int{"done": 0, "failed": 0, "skipped": 0, "pending": 0}
	for rows.Next() {
		var st string
		var n int
		require.NoError(t, rows.Scan(&st, &n))
		items[st] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, items, map[string]int{"done": j.Done, "failed": j.Failed, "skipped": j.Skipped, "pending": j.Pending}, "job %s", id)
}

// runsOf counts id's runs and those a reset started.
func (ev *env) runsOf(t *testing.T, id string) (runs, resets int) {
	t.Helper()
	require.NoError(t, ev.e.DB().QueryRow(`SELECT count(*), count(*) FILTER (WHERE start_reason = 'reset') FROM `+
		ev.e.Schema()+`.runs WHERE workflow_id = $1`, id).Scan(&runs, &resets))
	return runs, resets
}

// startFailed starts n orders that fail at their charge step and waits for them.
func (ev *env) startFailed(t *testing.T, prefix, customer string, n int) []string {
	t.Helper()
	ev.failCharge.Store(true)
	var ids []string
	for i := range n {
		ids = append(ids, ev.start(t, fmt.Sprintf("%s-%02d", prefix, i), customer, orderIn{Item: prefix}))
	}
	for _, id := range ids {
		ev.waitFor(t, id, engine.StatusFailed)
	}
	return ids
}

// TestBulkRelaunchEndToEnd relaunches 50 failed operations over HTTP: the
// dry run counts them and says why the others are left out, the job runs
// to the end, every operation is relaunched exactly once from before its
// failed step, each relaunch is audited, and the report says so in JSON
// and CSV.
func TestBulkRelaunchEndToEnd(t *testing.T) {
	ev := newEnv(t, api.Config{})
	failed := ev.startFailed(t, "f", "acme", 51)
	ev.failCharge.Store(false)
	ev.start(t, "ok", "acme", orderIn{Item: "ok"})
	ev.waitFor(t, "ok", engine.StatusCompleted)
	ev.start(t, "open", "acme", orderIn{Item: "open", Wait: true})
	ev.waitFor(t, "open", engine.StatusWaiting)

	req := map[string]any{"action": "relaunch", "reason": "card processor back up", "rate": 500, "dry_run": true,
		"filter": map[string]any{"kind": "order"}, "exclude": []string{failed[50]}}
	var pv api.BulkPreview
	ev.bulk(t, "operator", req, 200, &pv)
	require.Equal(t, 50, pv.Count)
	require.Equal(t, 52, pv.Matched)
	require.Equal(t, 1, pv.Excluded)
	require.Len(t, pv.Sample, 20)
	require.Equal(t, failed[0], pv.Sample[0].Id, "oldest first")
	for _, it := range pv.Sample {
		require.Equal(t, &api.BulkRelaunchPlan{FromStep: "charge", FromSeq: it.Relaunch.FromSeq, Reused: 1, Rerun: 1}, it.Relaunch, it.Id)
	}
	why := map[string]string{}
	for _, in := range pv.Ineligible {
		why[in.Id] = in.Why
	}
	require.Equal(t, map[string]string{"ok": "completed", "open": "open (waiting): relaunch a closed operation, cancel it first"}, why)
	require.Equal(t, 2, pv.IneligibleCount)
	var jobs int
	require.NoError(t, ev.e.DB().Get(&jobs, `SELECT count(*) FROM `+ev.e.Schema()+`.bulk_jobs`))
	require.Zero(t, jobs, "a dry run changes nothing")
	require.Equal(t, engine.StatusFailed, ev.status(t, failed[0]))

	// Asked by ID, one unknown: the preview says so.
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "r", "dry_run": true,
		"filter": map[string]any{"ids": []string{failed[0], "nope"}}}, 200, &pv)
	require.Equal(t, 1, pv.Count)
	require.Equal(t, []api.BulkIneligible{{Id: "nope", Why: "not found"}}, pv.Ineligible)

	delete(req, "dry_run")
	var j api.BulkJob
	ev.bulk(t, "operator", req, 201, &j)
	require.Equal(t, 52, j.Total)
	require.Equal(t, "oscar", j.CreatedBy)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 50, j.Done)
	require.Equal(t, 2, j.Skipped)
	require.Zero(t, j.Failed)
	require.Zero(t, j.Pending)
	require.NotNil(t, j.FinishedAt)
	for _, id := range failed[:50] {
		ev.waitFor(t, id, engine.StatusCompleted)
		runs, resets := ev.runsOf(t, id)
		require.Equal(t, 2, runs, id)
		require.Equal(t, 1, resets, id)
	}
	runs, _ := ev.runsOf(t, failed[50])
	require.Equal(t, 1, runs, "excluded")
	require.EqualValues(t, 51, ev.charged.Load(), "50 relaunched charges and the ok order's")

	// Audited, per operation, with who and why, and in its timeline.
	var audited int
	require.NoError(t, ev.e.DB().Get(&audited, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit
		WHERE action = 'relaunch' AND actor = 'oscar' AND reason = 'card processor back up' AND detail->>'bulk_job' = $1`, j.Id))
	require.Equal(t, 50, audited)
	require.NoError(t, ev.e.DB().Get(&audited, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE action = 'bulk_create'`))
	require.Equal(t, 1, audited)

	// The report, as JSON and as CSV.
	code, body := ev.do(t, "viewer", "GET", "/v1/bulk/"+j.Id+"/report", "")
	require.Equal(t, 200, code, body)
	var rep api.BulkReport
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	require.Len(t, rep.Items, 52)
	outcomes := map[string]int{}
	for _, it := range rep.Items {
		outcomes[it.Outcome]++
		if it.Id == "ok" {
			require.Equal(t, "completed", *it.Detail)
		}
		if it.Outcome == "done" {
			require.NotNil(t, it.NewRunId)
		}
	}
	require.Equal(t, map[string]int{"done": 50, "skipped": 2}, outcomes)
	for _, path := range []string{"/v1/bulk/" + j.Id + "/report?format=csv"} {
		code, body = ev.do(t, "viewer", "GET", path, "")
		require.Equal(t, 200, code, body)
		recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		require.NoError(t, err)
		require.Equal(t, []string{"operation_id", "outcome", "detail", "run_id", "new_run_id", "at"}, recs[0])
		require.Len(t, recs, 53)
		require.Equal(t, failed[0], recs[1][0])
	}
	hreq, _ := http.NewRequest("GET", ev.http.URL+"/v1/bulk/"+j.Id+"/report", nil)
	hreq.Header.Set("Authorization", "Bearer "+ev.tokens["viewer"])
	hreq.Header.Set("Accept", "text/csv")
	res, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, "text/csv", res.Header.Get("Content-Type"))

	// Listed; nothing failed, so there is nothing to retry.
	code, body = ev.do(t, "viewer", "GET", "/v1/bulk", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, j.Id)
	code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/retry-failed", "")
	require.Equal(t, 409, code, body)

	// Running it again skips them all: each was relaunched and completed.
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "again", "filter": map[string]any{"ids": failed[:50]}, "dry_run": true}, 200, &pv)
	require.Zero(t, pv.Count)
}

// TestBulkRelaunchFromStep: a bulk relaunch with from_step relaunches each
// operation from the first step of that name (here its first step, which
// runs again instead of being reused); an operation without such a step is
// skipped and says so; the job and its retry keep the from_step.
func TestBulkRelaunchFromStep(t *testing.T) {
	ev := newEnv(t, api.Config{})
	failed := ev.startFailed(t, "fs", "acme", 3)
	ev.failCharge.Store(false)

	var pv api.BulkPreview
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "r", "dry_run": true, "from_step": "nope",
		"filter": map[string]any{"ids": failed}}, 200, &pv)
	require.Zero(t, pv.Count)
	require.Equal(t, api.BulkIneligible{Id: failed[0], Why: `no step named "nope"`}, pv.Ineligible[0])
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "r", "dry_run": true, "from_step": "reserve",
		"filter": map[string]any{"ids": failed}}, 200, &pv)
	require.Equal(t, 3, pv.Count)

	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "from the top", "from_step": "reserve",
		"filter": map[string]any{"ids": failed}}, 201, &j)
	require.Equal(t, "reserve", *j.FromStep)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 3, j.Done)
	require.Equal(t, "reserve", *j.FromStep)
	for _, id := range failed {
		ev.waitFor(t, id, engine.StatusCompleted)
		var rerun bool
		require.NoError(t, ev.e.DB().Get(&rerun, `SELECT st.started_at >= r.created_at FROM `+ev.e.Schema()+`.runs r
			JOIN `+ev.e.Schema()+`.steps st ON st.run_id = r.run_id
			WHERE r.workflow_id = $1 AND r.start_reason = 'reset' AND st.name = 'reserve'`, id))
		require.True(t, rerun, "%s: reserve ran again in the relaunch, not reused", id)
	}
	var audited int
	require.NoError(t, ev.e.DB().Get(&audited, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit
		WHERE action = 'bulk_create' AND detail->>'from_step' = 'reserve'`))
	require.Equal(t, 1, audited)
}

// TestBulkCancelWithRefunds cancels open orders in bulk: each one's
// reservation is released (the refund), visible in its timeline.
func TestBulkCancelWithRefunds(t *testing.T) {
	ev := newEnv(t, api.Config{})
	var ids []string
	for i := range 5 {
		ids = append(ids, ev.start(t, fmt.Sprintf("c-%d", i), "acme", orderIn{Item: "c", Wait: true}))
	}
	for _, id := range ids {
		ev.waitFor(t, id, engine.StatusWaiting)
	}
	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "cancel", "reason": "supplier gone", "rate": 100,
		"filter": map[string]any{"status": []string{"waiting"}}}, 201, &j)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 5, j.Done)
	for _, id := range ids {
		ev.waitFor(t, id, engine.StatusCancelled)
		res, err := ev.client(t, "operator").GetOperationHistoryWithResponse(t.Context(), id)
		require.NoError(t, err)
		var refunded, cancelled bool
		for _, e := range res.JSON200.Events {
			refunded = refunded || (e.Type == "step" && *e.Name == "release" && *e.Status == "completed")
			cancelled = cancelled || (e.Type == "action" && *e.Name == "cancel" && *e.Reason == "supplier gone")
		}
		require.True(t, refunded, "%s: the refund is in the timeline", id)
		require.True(t, cancelled, "%s: the bulk cancel is in the timeline", id)
	}
	require.EqualValues(t, 5, ev.released.Load())
}

// TestBulkSignal sends a declared signal to waiting orders; one whose
// payload cannot be its type is refused before anything is sent.
func TestBulkSignal(t *testing.T) {
	ev := newEnv(t, api.Config{})
	a := ev.start(t, "s-1", "acme", orderIn{Item: "s", Wait: true})
	ev.waitFor(t, a, engine.StatusWaiting)
	var pv api.BulkPreview
	ev.bulk(t, "operator", map[string]any{"action": "signal", "reason": "r", "dry_run": true, "filter": map[string]any{},
		"signal": map[string]any{"name": "confirm", "payload": map[string]any{"approved": "yes"}}}, 200, &pv)
	require.Zero(t, pv.Count)
	require.Contains(t, pv.Ineligible[0].Why, "payload")
	ev.bulk(t, "operator", map[string]any{"action": "signal", "reason": "r", "dry_run": true, "filter": map[string]any{},
		"signal": map[string]any{"name": "nudge"}}, 200, &pv)
	require.Equal(t, `the kind "order" declares no signal "nudge" (declared: confirm; and every kind takes graft.cancel.operator)`, pv.Ineligible[0].Why)
	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "signal", "reason": "customer called", "filter": map[string]any{"ids": []string{a}},
		"signal": map[string]any{"name": "confirm", "payload": map[string]any{"approved": true}}}, 201, &j)
	ev.waitJob(t, j.Id, api.BulkStateCompleted)
	ev.waitFor(t, a, engine.StatusCompleted)
}

// TestBulkPauseResumeStop: a slow job pauses (and stays paused), resumes
// and finishes; another stops for good, its untouched operations reported
// skipped.
func TestBulkPauseResumeStop(t *testing.T) {
	// The job's relaunches wait at a gate the test opens, once it has asked
	// for the pause (or stop): a job never runs through its items before
	// the request, however slow the machine (the test flaked under load
	// when the job finished before the pause came).
	var gate resetGate
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{gate.interceptor()}})
	// One item in hand at a time: at most the held item and the one handed
	// over next are done after the request.
	ev := newEnvOn(t, e, api.Config{BulkConcurrency: 1})
	failed := ev.startFailed(t, "p", "acme", 12)
	ev.failCharge.Store(false)
	gate.hold(1)
	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "slowly", "rate": 4,
		"filter": map[string]any{"ids": failed[:6]}}, 201, &j)
	testenv.Eventually(t, 30*time.Second, func() bool { return ev.job(t, "viewer", j.Id).Done >= 1 && gate.waiting() },
		"a first item done and the next one held")
	code, body := ev.do(t, "viewer", "POST", "/v1/bulk/"+j.Id+"/pause", "")
	require.Equal(t, 403, code, body)
	code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/pause", `{"reason":"looking"}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, "pausing", gjson(t, body, "state"))
	code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/pause", "")
	require.Equal(t, 409, code, "already pausing: %s", body)
	gate.open()
	paused := ev.waitJob(t, j.Id, api.BulkStatePaused)
	require.Positive(t, paused.Pending)
	ev.checkProgress(t, j.Id)
	require.Equal(t, paused.Done, ev.job(t, "viewer", j.Id).Done)

	code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/resume", `{}`)
	require.Equal(t, 200, code, body)
	done := ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 6, done.Done)
	code, _ = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/stop", "")
	require.Equal(t, 409, code, "a finished job cannot be stopped")

	gate.hold(0)
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "to stop", "rate": 1,
		"filter": map[string]any{"ids": failed[6:]}}, 201, &j)
	code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/stop", `{"reason":"wrong filter"}`)
	require.Equal(t, 200, code, body)
	gate.open()
	stopped := ev.waitJob(t, j.Id, api.BulkStateStopped)
	require.Equal(t, 6, stopped.Done+stopped.Skipped)
	require.Less(t, stopped.Done, 6)
	ev.checkProgress(t, j.Id)
	code, body = ev.do(t, "viewer", "GET", "/v1/bulk/"+j.Id+"/report", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, "the job was stopped")
	var actions []string
	require.NoError(t, ev.e.DB().Select(&actions, `SELECT action || ':' || coalesce(reason, '') FROM `+ev.e.Schema()+`.api_audit
		WHERE action LIKE 'bulk_%' AND action <> 'bulk_create' ORDER BY id`))
	require.Equal(t, []string{"bulk_pause:looking", "bulk_resume:", "bulk_stop:wrong filter"}, actions)
}

// resetGate holds a client's resets, after the first few it lets through,
// until it is opened.
type resetGate struct {
	mu   sync.Mutex
	free int           // resets let through before the gate holds them
	ch   chan struct{} // closed when the gate opens
	held int           // resets waiting at the gate
}

// hold lets free more resets through and holds the next ones until open.
func (g *resetGate) hold(free int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.free, g.ch, g.held = free, make(chan struct{}), 0
}

// open lets every reset held, and the next ones, through.
func (g *resetGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.ch)
	g.ch = nil
}

// waiting tells whether a reset waits at the gate.
func (g *resetGate) waiting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held > 0
}

func (g *resetGate) interceptor() engine.Interceptor {
	return engine.ClientInterceptorFunc(func(ctx context.Context, in *engine.ClientCallInput, next engine.ClientNext) (any, error) {
		if in.Kind == engine.ClientReset {
			g.mu.Lock()
			ch := g.ch
			if ch != nil && g.free > 0 {
				g.free, ch = g.free-1, nil
			}
			if ch != nil {
				g.held++
			}
			g.mu.Unlock()
			if ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
		return next(ctx, in)
	})
}

func gjson(t *testing.T, body, field string) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	return fmt.Sprint(m[field])
}

// TestBulkRetryFailed: operations a job failed on are retried, and only
// those, by a new job.
func TestBulkRetryFailed(t *testing.T) {
	var refuse sync.Map // workflow IDs whose reset the client refuses
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{engine.ClientInterceptorFunc(
		func(ctx context.Context, in *engine.ClientCallInput, next engine.ClientNext) (any, error) {
			if _, ok := refuse.Load(in.WorkflowID); ok && in.Kind == engine.ClientReset {
				return nil, fmt.Errorf("provider down for %s", in.WorkflowID)
			}
			return next(ctx, in)
		})}})
	ev := newEnvOn(t, e, api.Config{})
	failed := ev.startFailed(t, "r", "acme", 4)
	ev.failCharge.Store(false)
	refuse.Store(failed[1], true)
	refuse.Store(failed[3], true)
	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "first", "rate": 100, "filter": map[string]any{"status": []string{"failed"}}}, 201, &j)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 2, j.Done)
	require.Equal(t, 2, j.Failed)
	ev.checkProgress(t, j.Id)
	_, body := ev.do(t, "viewer", "GET", "/v1/bulk/"+j.Id+"/report", "")
	require.Contains(t, body, "provider down for "+failed[1])

	refuse.Clear()
	code, body := ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/retry-failed", `{"reason":"provider back"}`)
	require.Equal(t, 201, code, body)
	var retry api.BulkJob
	require.NoError(t, json.Unmarshal([]byte(body), &retry))
	require.Equal(t, j.Id, *retry.RetryOf)
	require.Equal(t, 2, retry.Total)
	require.Equal(t, "provider back", retry.Reason)
	retry = ev.waitJob(t, retry.Id, api.BulkStateCompleted)
	require.Equal(t, 2, retry.Done)
	for _, id := range failed {
		ev.waitFor(t, id, engine.StatusCompleted)
		_, resets := ev.runsOf(t, id)
		require.Equal(t, 1, resets, id)
	}
}

// TestBulkCustomerScope: a customer's bulk job (cancel, when the server
// allows customers to cancel) never touches another customer's
// operations, whatever its filter names; other actions are refused.
func TestBulkCustomerScope(t *testing.T) {
	ev := newEnv(t, api.Config{CustomerMayCancel: true})
	mine := ev.start(t, "acme-w", "acme", orderIn{Item: "a", Wait: true})
	theirs := ev.start(t, "globex-w", "globex", orderIn{Item: "g", Wait: true})
	ev.waitFor(t, mine, engine.StatusWaiting)
	ev.waitFor(t, theirs, engine.StatusWaiting)

	ev.bulk(t, "customer", map[string]any{"action": "relaunch", "reason": "r", "filter": map[string]any{}}, 403, nil)
	var pv api.BulkPreview
	ev.bulk(t, "customer", map[string]any{"action": "cancel", "reason": "r", "dry_run": true,
		"filter": map[string]any{"ids": []string{mine, theirs}}}, 200, &pv)
	require.Equal(t, 1, pv.Count)
	require.Equal(t, []api.BulkIneligible{{Id: theirs, Why: "not found"}}, pv.Ineligible, "another's operation looks missing")
	ev.bulk(t, "customer", map[string]any{"action": "cancel", "reason": "r", "dry_run": true,
		"filter": map[string]any{"customer": "globex"}}, 200, &pv)
	require.Zero(t, pv.Matched)

	var j api.BulkJob
	ev.bulk(t, "customer", map[string]any{"action": "cancel", "reason": "changed my mind", "filter": map[string]any{}}, 201, &j)
	require.Equal(t, 1, j.Total)
	ev.waitJob(t, j.Id, api.BulkStateCompleted)
	ev.waitFor(t, mine, engine.StatusCancelled)
	require.Equal(t, engine.StatusWaiting, ev.status(t, theirs))

	// The other customer cannot see the job at all; staff can.
	code, body := ev.do(t, "customer-other", "GET", "/v1/bulk/"+j.Id, "")
	require.Equal(t, 404, code, body)
	code2, body2 := ev.do(t, "customer-other", "GET", "/v1/bulk/bulk-nope", "")
	require.Equal(t, 404, code2)
	require.Equal(t, strings.ReplaceAll(body2, "bulk-nope", j.Id), body)
	_, body = ev.do(t, "customer-other", "GET", "/v1/bulk", "")
	require.NotContains(t, body, j.Id)
	_, body = ev.do(t, "customer", "GET", "/v1/bulk", "")
	require.Contains(t, body, j.Id)
	require.Equal(t, j.Id, ev.job(t, "viewer", j.Id).Id)
}

// TestBulkBadInput: each bad request is a problem naming its field, and
// changes nothing.
func TestBulkBadInput(t *testing.T) {
	ev := newEnv(t, api.Config{})
	for _, tc := range []struct{ body, field string }{
		{`{"action":"delete","reason":"r","filter":{}}`, "action"},
		{`{"action":"relaunch","filter":{}}`, "reason"},
		{`{"action":"relaunch","reason":"r"}`, "filter"},
		{`{"action":"relaunch","reason":" ","filter":{}}`, "reason"},
		{`{"action":"relaunch","reason":"r","filter":{},"rate":0}`, "rate"},
		{`{"action":"relaunch","reason":"r","filter":{},"rate":1e9}`, "rate"},
		{`{"action":"relaunch","reason":"r","filter":{"status":["lost"]}}`, "filter.status"},
		{`{"action":"relaunch","reason":"r","filter":{"route":"moon"}}`, "filter.route"},
		{`{"action":"relaunch","reason":"r","filter":{"route":"legacy"}}`, "filter.route"},
		{`{"action":"relaunch","reason":"r","filter":{"ids":[]}}`, "filter.ids"},
		{`{"action":"signal","reason":"r","filter":{}}`, "signal"},
		{`{"action":"signal","reason":"r","filter":{},"signal":{"name":""}}`, "signal.name"},
		{`{"action":"cancel","reason":"r","filter":{},"signal":{"name":"x"}}`, "signal"},
		{`{"action":"cancel","reason":"r","filter":{},"from_step":"charge"}`, "from_step"},
		{`{"action":"relaunch","reason":"r","filter":{},"from_step":" "}`, "from_step"},
	} {
		code, body := ev.do(t, "operator", "POST", "/v1/bulk", tc.body)
		require.Equal(t, 400, code, tc.body)
		require.Equal(t, tc.field, gjson(t, body, "field"), "%s: %s", tc.body, body)
	}
	for _, body := range []string{`{"action":"relaunch","reason":"r","filter":{},"extra":1}`, `not json`} {
		code, b := ev.do(t, "operator", "POST", "/v1/bulk", body)
		require.Equal(t, 400, code, "%s: %s", body, b)
	}
	code, body := ev.do(t, "viewer", "GET", "/v1/bulk?limit=0", "")
	require.Equal(t, 400, code, body)
	code, body = ev.do(t, "viewer", "GET", "/v1/bulk/bulk-nope/report?format=xml", "")
	require.Equal(t, 400, code, body)
	code, body = ev.do(t, "operator", "POST", "/v1/bulk/bulk-nope/pause", "")
	require.Equal(t, 404, code, body)
	var n int
	require.NoError(t, ev.e.DB().Get(&n, `SELECT (SELECT count(*) FROM `+ev.e.Schema()+`.bulk_jobs) + (SELECT count(*) FROM `+ev.e.Schema()+`.api_audit)`))
	require.Zero(t, n)
}

// TestBulkContinuesAsNew: a job longer than a run's share of batches goes
// on in a new run of its workflow (its history stays bounded), where
// pause and resume still work, and finishes every item once.
func TestBulkContinuesAsNew(t *testing.T) {
	ev := newEnv(t, api.Config{})
	api.SetBulkBatchesPerRun(ev.srv, 2)
	failed := ev.startFailed(t, "n", "acme", 10)
	ev.failCharge.Store(false)
	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "relaunch", "reason": "long", "rate": 2, "filter": map[string]any{"ids": failed}}, 201, &j)
	// Batches of 4 at 2/s: the third batch runs in the job's second run.
	testenv.Eventually(t, 60*time.Second, func() bool {
		var runs int
		require.NoError(t, ev.e.DB().Get(&runs, `SELECT count(*) FROM `+ev.e.Schema()+`.runs WHERE workflow_id = $1`, j.Id))
		return runs >= 2
	}, "the job to continue as new")
	code, body := ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/pause", "")
	if code == 200 {
		ev.waitJob(t, j.Id, api.BulkStatePaused)
		code, body = ev.do(t, "operator", "POST", "/v1/bulk/"+j.Id+"/resume", "")
		require.Equal(t, 200, code, body)
	} else {
		require.Equal(t, 409, code, "only a finished job refuses a pause: %s", body)
	}
	done := ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 10, done.Done)
	for _, id := range failed {
		_, resets := ev.runsOf(t, id)
		require.Equal(t, 1, resets, id)
	}
}

// TestBulkItemDeadlockIsNoFailure: an item whose action is rolled back by
// a deadlock (40P01) is not reported failed: the deadlock says nothing of
// the operation, the item stays pending and the job's batch runs again.
// Here the cancel waits for the operation's run, which a transaction holds
// that then takes the item's row; PostgreSQL cancels the cancel.
func TestBulkItemDeadlockIsNoFailure(t *testing.T) {
	ev := newEnv(t, api.Config{})
	a := ev.start(t, "dl-1", "acme", orderIn{Item: "dl", Wait: true})
	ev.waitFor(t, a, engine.StatusWaiting)
	ctx := testenv.Ctx(t, time.Minute)
	db, s := ev.e.DB(), ev.e.Schema()
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	var pid int
	require.NoError(t, tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))
	_, err = tx.Exec(`SET LOCAL deadlock_timeout = '30s'`)
	require.NoError(t, err)
	_, err = tx.Exec(`SELECT 1 FROM `+s+`.runs WHERE workflow_id = $1 AND status IN ('pending','running','waiting') FOR NO KEY UPDATE`, a)
	require.NoError(t, err)

	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "cancel", "reason": "r", "rate": 100, "filter": map[string]any{"ids": []string{a}}}, 201, &j)
	testenv.Eventually(t, 20*time.Second, func() bool {
		var waiting int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the bulk cancel never waited for the run")
	_, err = tx.Exec(`SELECT 1 FROM `+s+`.bulk_items WHERE job_id = $1 AND operation_id = $2 FOR UPDATE`, j.Id, a)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 1, j.Done, "%+v", j)
	require.Zero(t, j.Failed, "%+v", j)
	ev.waitFor(t, a, engine.StatusCancelled)
}

// TestBulkJobReportsIDsNotFound: a job asked for by ID reports an ID that
// matches no operation as skipped, "not found", as its dry run does; it is
// not left out of the job's total and report.
func TestBulkJobReportsIDsNotFound(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ev.start(t, "open", "acme", orderIn{Item: "open", Wait: true})
	ev.waitFor(t, "open", engine.StatusWaiting)

	var j api.BulkJob
	ev.bulk(t, "operator", map[string]any{"action": "cancel", "reason": "account closed",
		"filter": map[string]any{"ids": []string{"open", "nope", "nope"}}}, 201, &j)
	require.Equal(t, 2, j.Total)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, 1, j.Done)
	require.Equal(t, 1, j.Skipped)
	rep := ev.report(t, j.Id)
	got := map[string]string{}
	for _, it := range rep.Items {
		got[it.Id] = it.Outcome
		if it.Detail != nil {
			got[it.Id] += " " + *it.Detail
		}
	}
	require.Equal(t, "skipped not found", got["nope"])
	require.Equal(t, "done", got["open"])
}

// TestBulkRelaunchDryRunIsTheJob: a bulk relaunch's dry run, with a
// from_step some operations lack, lists those as the job then skips them,
// with the job's why, counts what the job then relaunches, and says of each
// sampled operation what its own relaunch dry run says: the step it runs
// again from and how many steps are reused and run again.
func TestBulkRelaunchDryRunIsTheJob(t *testing.T) {
	ev := newEnv(t, api.Config{})
	failed := ev.startFailed(t, "dj", "acme", 3)
	ev.failCharge.Store(false)
	var cancelled []string // closed before their charge: no step named "charge"
	for i := range 2 {
		id := ev.start(t, fmt.Sprintf("dj-cancelled-%d", i), "acme", orderIn{Item: "c", Wait: true})
		ev.waitFor(t, id, engine.StatusWaiting)
		code, body := ev.do(t, "operator", "POST", "/v1/operations/"+id+"/cancel", `{"reason":"r"}`)
		require.Equal(t, 200, code, body)
		ev.waitFor(t, id, engine.StatusCancelled)
		cancelled = append(cancelled, id)
	}
	ev.start(t, "dj-ok", "acme", orderIn{Item: "ok"})
	ev.waitFor(t, "dj-ok", engine.StatusCompleted)

	req := map[string]any{"action": "relaunch", "reason": "charge again", "from_step": "charge", "rate": 500, "dry_run": true,
		"filter": map[string]any{"kind": "order"}}
	var pv api.BulkPreview
	ev.bulk(t, "operator", req, 200, &pv)
	require.Equal(t, 6, pv.Matched)
	require.Equal(t, 3, pv.Count)
	require.Equal(t, 3, pv.IneligibleCount)
	why := map[string]string{}
	for _, in := range pv.Ineligible {
		why[in.Id] = in.Why
	}
	require.Equal(t, map[string]string{cancelled[0]: `no step named "charge"`, cancelled[1]: `no step named "charge"`, "dj-ok": "completed"}, why)
	require.Len(t, pv.Sample, 3)
	for i, it := range pv.Sample {
		require.Equal(t, failed[i], it.Id)
		require.NotNil(t, it.Relaunch, "%s: what the relaunch would do", it.Id)
		code, body := ev.do(t, "operator", "POST", "/v1/operations/"+it.Id+"/relaunch", `{"reason":"r","from_step":"charge","dry_run":true}`)
		require.Equal(t, 200, code, body)
		var one api.RelaunchResult
		require.NoError(t, json.Unmarshal([]byte(body), &one))
		require.Equal(t, api.BulkRelaunchPlan{FromStep: "charge", FromSeq: one.Rerun[0].Seq, Reused: len(one.Reused), Rerun: len(one.Rerun)},
			*it.Relaunch, "%s: as its own relaunch dry run", it.Id)
		require.Equal(t, 1, it.Relaunch.Reused, "reserve")
		require.Equal(t, 1, it.Relaunch.Rerun, "charge")
	}

	// Without from_step: from before each failed activity; the cancelled
	// ones have none.
	delete(req, "from_step")
	var pv2 api.BulkPreview
	ev.bulk(t, "operator", req, 200, &pv2)
	require.Equal(t, 3, pv2.Count)
	for _, in := range pv2.Ineligible {
		if in.Id != "dj-ok" {
			require.Equal(t, "no failed activity to relaunch before", in.Why, in.Id)
		}
	}
	require.Equal(t, api.BulkRelaunchPlan{FromStep: "charge", FromSeq: pv.Sample[0].Relaunch.FromSeq, Reused: 1, Rerun: 1}, *pv2.Sample[0].Relaunch)

	// The job does what the dry run said.
	req["from_step"] = "charge"
	delete(req, "dry_run")
	var j api.BulkJob
	ev.bulk(t, "operator", req, 201, &j)
	j = ev.waitJob(t, j.Id, api.BulkStateCompleted)
	require.Equal(t, pv.Count, j.Done)
	require.Equal(t, pv.IneligibleCount, j.Skipped)
	require.Zero(t, j.Failed)
	rep := ev.report(t, j.Id)
	skipped := map[string]string{}
	for _, it := range rep.Items {
		if it.Outcome == "skipped" {
			skipped[it.Id] = *it.Detail
		}
	}
	require.Equal(t, why, skipped)

	// Other actions' previews carry no plan (an open operation, so that
	// the cancel preview has a sample whatever the relaunched ones do).
	open := ev.start(t, "dj-open", "acme", orderIn{Item: "o", Wait: true})
	ev.waitFor(t, open, engine.StatusWaiting)
	var cpv api.BulkPreview // a fresh value: decoding into pv would keep its sample's plans
	ev.bulk(t, "operator", map[string]any{"action": "cancel", "reason": "r", "dry_run": true, "filter": map[string]any{"kind": "order"}}, 200, &cpv)
	require.NotEmpty(t, cpv.Sample)
	for _, it := range cpv.Sample {
		require.Nil(t, it.Relaunch, it.Id)
	}
}
