package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

func (ev *env) list(t *testing.T, role string, p api.ListOperationsParams) api.OperationPage {
	t.Helper()
	res, err := ev.client(t, role).ListOperationsWithResponse(t.Context(), &p)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode(), string(res.Body))
	return *res.JSON200
}

func ids(p api.OperationPage) []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.Id)
	}
	return out
}

// TestListFiltersAndPages: each filter, the counts, and keyset pages that
// cover the list once, newest first.
func TestListFiltersAndPages(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ev.failCharge.Store(true)
	ev.start(t, "f1", "acme", orderIn{Item: "1"})
	ev.start(t, "f2", "acme", orderIn{Item: "2"})
	ev.waitFor(t, "f1", engine.StatusFailed)
	ev.waitFor(t, "f2", engine.StatusFailed)
	ev.failCharge.Store(false)
	ev.start(t, "ok1", "globex", orderIn{Item: "3"})
	ev.waitFor(t, "ok1", engine.StatusCompleted)
	ev.start(t, "w1", "globex", orderIn{Item: "4", Wait: true})
	// Unloaded while it waits for its signal, with no timer.
	ev.waitFor(t, "w1", engine.StatusWaiting)

	all := ev.list(t, "viewer", api.ListOperationsParams{})
	require.Equal(t, []string{"w1", "ok1", "f2", "f1"}, ids(all))
	require.Equal(t, map[string]int64{"failed": 2, "completed": 1, "waiting": 1, "waiting_signal": 1}, all.Counts)
	require.Nil(t, all.NextCursor)

	failed := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterFailed}})
	require.Equal(t, []string{"f2", "f1"}, ids(failed))
	require.Equal(t, all.Counts, failed.Counts, "counts are per status for the filter, statuses aside")
	require.Equal(t, "CardDeclined", *failed.Items[0].LastError.Type)
	require.Equal(t, "charge", *failed.Items[0].LastError.Step)

	for _, tc := range []struct {
		name string
		p    api.ListOperationsParams
		want []string
	}{
		{"two statuses", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterCompleted, api.StatusFilterWaitingSignal}}, []string{"w1", "ok1"}},
		{"waiting for a signal", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterWaitingSignal}}, []string{"w1"}},
		{"needs an operator", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterNeedsOperator}}, nil},
		{"kind", api.ListOperationsParams{Kind: ptr("order")}, []string{"w1", "ok1", "f2", "f1"}},
		{"unknown kind", api.ListOperationsParams{Kind: ptr("refund")}, nil},
		{"customer", api.ListOperationsParams{Customer: ptr("acme")}, []string{"f2", "f1"}},
		{"failing step", api.ListOperationsParams{FailingStep: ptr("charge")}, []string{"f2", "f1"}},
		{"error type", api.ListOperationsParams{ErrorType: ptr("CardDeclined")}, []string{"f2", "f1"}},
		{"other error type", api.ListOperationsParams{ErrorType: ptr("Timeout")}, nil},
		{"route graft", api.ListOperationsParams{Route: ptr(api.ListOperationsParamsRoute("graft"))}, []string{"w1", "ok1", "f2", "f1"}},
		{"created after", api.ListOperationsParams{CreatedAfter: ptr(all.Items[1].CreatedAt)}, []string{"w1", "ok1"}},
		{"created before", api.ListOperationsParams{CreatedBefore: ptr(all.Items[1].CreatedAt)}, []string{"f2", "f1"}},
	} {
		require.Equal(t, tc.want, ids(ev.list(t, "viewer", tc.p)), tc.name)
	}

	// Pages of one cover the list once, in order.
	var seen []string
	p := api.ListOperationsParams{Limit: ptr(1)}
	for range 10 {
		page := ev.list(t, "viewer", p)
		seen = append(seen, ids(page)...)
		if page.NextCursor == nil {
			break
		}
		p.Cursor = page.NextCursor
	}
	require.Equal(t, ids(all), seen)
}

// TestActionsEndToEnd relaunches a failed operation from before its failed
// step, signals a waiting one, cancels another and sees the refund, each
// through HTTP on real workflows, and finds every action in the timeline.
func TestActionsEndToEnd(t *testing.T) {
	ev := newEnv(t, api.Config{})
	op := ev.client(t, "operator")
	ctx := testenv.Ctx(t, 60*time.Second)

	// Relaunch.
	ev.failCharge.Store(true)
	ev.start(t, "f1", "acme", orderIn{Item: "1"})
	ev.waitFor(t, "f1", engine.StatusFailed)
	got, err := ev.client(t, "viewer").GetOperationWithResponse(ctx, "f1")
	require.NoError(t, err)
	require.Equal(t, api.StatusFailed, got.JSON200.Status)
	require.Equal(t, "CardDeclined", *got.JSON200.Error.Type)
	require.Equal(t, "charge", *got.JSON200.LastError.Step)
	require.Equal(t, 1, got.JSON200.Runs)
	require.Equal(t, "acme", *got.JSON200.Customer)
	require.JSONEq(t, `{"item":"1"}`, string(*got.JSON200.Input))
	require.NotNil(t, got.JSON200.Signals)
	require.Equal(t, "confirm", (*got.JSON200.Signals)[0].Name)
	require.True(t, *got.JSON200.KindRegistered)
	require.Equal(t, "boolean", (*(*got.JSON200.Signals)[0].Schema)["properties"].(map[string]any)["approved"].(map[string]any)["type"])

	dry, err := op.RelaunchOperationWithResponse(ctx, "f1", api.RelaunchRequest{Reason: "card updated", DryRun: ptr(true)})
	require.NoError(t, err)
	require.Equal(t, 200, dry.StatusCode(), string(dry.Body))
	require.Equal(t, []string{"reserve"}, stepNames(dry.JSON200.Reused))
	require.Equal(t, []string{"charge"}, stepNames(dry.JSON200.Rerun))
	require.Nil(t, dry.JSON200.RunId)
	require.Equal(t, engine.StatusFailed, ev.status(t, "f1"), "a dry run changes nothing")

	ev.failCharge.Store(false)
	rel, err := op.RelaunchOperationWithResponse(ctx, "f1", api.RelaunchRequest{Reason: "card updated"})
	require.NoError(t, err)
	require.Equal(t, 200, rel.StatusCode(), string(rel.Body))
	require.NotNil(t, rel.JSON200.RunId)
	ev.waitFor(t, "f1", engine.StatusCompleted)
	// The relaunch leaves created_at at the operation's creation and says
	// when it was relaunched, in the operation and in the list.
	created := got.JSON200.CreatedAt
	require.Nil(t, got.JSON200.RelaunchedAt)
	require.Zero(t, got.JSON200.Relaunches)
	after, err := ev.client(t, "viewer").GetOperationWithResponse(ctx, "f1")
	require.NoError(t, err)
	require.True(t, after.JSON200.CreatedAt.Equal(created), "created %s, then %s", created, after.JSON200.CreatedAt)
	require.NotNil(t, after.JSON200.RelaunchedAt)
	require.True(t, after.JSON200.RelaunchedAt.After(created))
	require.Equal(t, 1, after.JSON200.Relaunches)
	require.Equal(t, 2, after.JSON200.Runs)
	page := ev.list(t, "viewer", api.ListOperationsParams{})
	require.Equal(t, "f1", page.Items[0].Id)
	require.True(t, page.Items[0].CreatedAt.Equal(created))
	require.True(t, page.Items[0].RelaunchedAt.Equal(*after.JSON200.RelaunchedAt))
	require.EqualValues(t, 1, ev.charged.Load())
	again, err := op.RelaunchOperationWithResponse(ctx, "f1", api.RelaunchRequest{Reason: "twice"})
	require.NoError(t, err)
	require.Equal(t, 409, again.StatusCode(), "the latest run has no failed step: %s", again.Body)
	require.Contains(t, string(again.Body), `"type":"`+api.ProblemNoFailedStep+`"`)

	hist, err := ev.client(t, "customer").GetOperationHistoryWithResponse(ctx, "f1")
	require.NoError(t, err)
	require.Equal(t, 200, hist.StatusCode(), string(hist.Body))
	var runsStarted, actions int
	var reserveSteps, reused, closed []string
	for _, e := range hist.JSON200.Events {
		switch {
		case e.Type == "run_started":
			runsStarted++
			// Not the run's final status (failed for the first): a
			// start has no status of its own; run_closed has the end's.
			require.Nil(t, e.Status, "run_started of %s", *e.RunId)
		case e.Type == "run_closed":
			closed = append(closed, *e.Status)
		case e.Type == "action" && *e.Name == "relaunch":
			actions++
			require.Equal(t, "oscar", *e.Actor)
			require.Equal(t, "card updated", *e.Reason)
		case e.Type == "step" && *e.Name == "charge":
			reserveSteps = append(reserveSteps, *e.Status)
		case e.Type == "step" && *e.Name == "reserve":
			reused = append(reused, *e.RunId)
		}
	}
	// The second run reused reserve's record: it ran once, in the first
	// run, and the timeline says so once.
	require.Len(t, reused, 1, "reserve is shown once")
	require.Equal(t, 2, runsStarted)
	require.Equal(t, 1, actions)
	require.Equal(t, []string{"failed", "completed"}, reserveSteps)
	require.Equal(t, []string{"failed", "completed"}, closed)

	// Signal.
	ev.start(t, "w1", "acme", orderIn{Item: "w", Wait: true})
	ev.waitFor(t, "w1", engine.StatusWaiting)
	got, err = op.GetOperationWithResponse(ctx, "w1")
	require.NoError(t, err)
	require.Equal(t, "event", *got.JSON200.Now.WaitingFor)
	require.Equal(t, []string{api.CondWaitingSignal}, *got.JSON200.Conditions)
	sig, err := op.SignalOperationWithResponse(ctx, "w1", api.SignalRequest{Name: "confirm", Payload: ptr(json.RawMessage(`{"approved":true}`)), Reason: "customer called"})
	require.NoError(t, err)
	require.Equal(t, 202, sig.StatusCode(), string(sig.Body))
	ev.waitFor(t, "w1", engine.StatusCompleted)

	// Cancel, with the refund plan and the refund in the timeline.
	ev.start(t, "w2", "acme", orderIn{Item: "c", Wait: true})
	testenv.Eventually(t, 20*time.Second, func() bool {
		h, err := ev.e.Client().History(ctx, "w2")
		return err == nil && len(h[0].Steps) > 0 && h[0].Steps[0].Status == "completed"
	}, "w2 reserved")
	can, err := op.CancelOperationWithResponse(ctx, "w2", api.CancelRequest{Reason: "customer asked"})
	require.NoError(t, err)
	require.Equal(t, 200, can.StatusCode(), string(can.Body))
	require.Nil(t, can.JSON200.RefundPlanError)
	require.Len(t, *can.JSON200.RefundPlan, 1)
	require.Equal(t, "release", (*can.JSON200.RefundPlan)[0].Undo)
	require.Equal(t, "reserve", *(*can.JSON200.RefundPlan)[0].Activity)
	ev.waitFor(t, "w2", engine.StatusCancelled)
	require.EqualValues(t, 1, ev.released.Load())
	hist, err = op.GetOperationHistoryWithResponse(ctx, "w2")
	require.NoError(t, err)
	var refunded, cancelled bool
	for _, e := range hist.JSON200.Events {
		refunded = refunded || (e.Type == "step" && *e.Name == "release" && *e.Status == "completed")
		cancelled = cancelled || (e.Type == "action" && *e.Name == "cancel" && *e.Reason == "customer asked")
	}
	require.True(t, refunded, "the refund is in the timeline")
	require.True(t, cancelled, "the cancel action is in the timeline")
}

func stepNames(refs []api.StepRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

// A run a worker claimed is running, though its row keeps the status it
// was claimed in (pending or waiting) until the worker's first lease
// renewal: the claim is a heap-only update that leases it until
// claimed_until (engine's store.claimSQL). The operation says running.
func TestClaimedRunIsReportedRunning(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ev.start(t, "w1", "globex", orderIn{Item: "4", Wait: true})
	ev.waitFor(t, "w1", engine.StatusWaiting)
	for _, status := range []string{"waiting", "pending"} {
		// As a worker elsewhere leaves it when it claims it.
		_, err := ev.e.DB().Exec(`UPDATE `+ev.e.Schema()+`.runs SET status = $1, lease_owner = 'elsewhere',
			claimed_until = now() + interval '1 hour', loads = loads + 1 WHERE workflow_id = 'w1'`, status)
		require.NoError(t, err)
		require.Equal(t, api.StatusRunning, ev.get(t, "w1").Status, "claimed in status %s", status)
	}
}

// A relaunch from before a signal the earlier run received delivers that
// signal again, with its payload: the dry run says so (redelivered), and
// the new run goes on without a new signal. (The engine's Reset moves every
// signal of the old run to the new one; those its kept record did not
// consume are received again, as Temporal reapplies signals after a reset
// point, so an operator's relaunch does not lose a customer's answer.)
func TestRelaunchRedeliversReceivedSignals(t *testing.T) {
	ev := newEnv(t, api.Config{})
	op := ev.client(t, "operator")
	ctx := testenv.Ctx(t, 60*time.Second)
	ev.failCharge.Store(true)
	ev.start(t, "s1", "acme", orderIn{Item: "1", Wait: true})
	ev.waitFor(t, "s1", engine.StatusWaiting)
	sig, err := op.SignalOperationWithResponse(ctx, "s1", api.SignalRequest{Name: "confirm", Payload: ptr(json.RawMessage(`{"approved":true}`)), Reason: "phoned"})
	require.NoError(t, err)
	require.Equal(t, 202, sig.StatusCode(), string(sig.Body))
	ev.waitFor(t, "s1", engine.StatusFailed)

	// From before the failure: the signal is kept, not received again.
	dry, err := op.RelaunchOperationWithResponse(ctx, "s1", api.RelaunchRequest{Reason: "look", DryRun: ptr(true)})
	require.NoError(t, err)
	require.Equal(t, 200, dry.StatusCode(), string(dry.Body))
	require.Equal(t, []string{"reserve", "confirm"}, stepNames(dry.JSON200.Reused))
	require.Equal(t, []api.StepRef{{Seq: 3, Kind: "activity", Name: "charge", Status: ptr("failed")}}, dry.JSON200.Rerun)

	// From the signal: it is received again.
	dry, err = op.RelaunchOperationWithResponse(ctx, "s1", api.RelaunchRequest{Reason: "look", FromStep: ptr("confirm"), DryRun: ptr(true)})
	require.NoError(t, err)
	require.Equal(t, 200, dry.StatusCode(), string(dry.Body))
	require.Equal(t, []api.StepRef{
		{Seq: 2, Kind: "signal", Name: "confirm", Status: ptr("completed"), Redelivered: ptr(true)},
		{Seq: 3, Kind: "activity", Name: "charge", Status: ptr("failed")},
	}, dry.JSON200.Rerun)

	// And so it is: the new run charges without a new signal.
	ev.failCharge.Store(false)
	rel, err := op.RelaunchOperationWithResponse(ctx, "s1", api.RelaunchRequest{Reason: "card updated", FromStep: ptr("confirm")})
	require.NoError(t, err)
	require.Equal(t, 200, rel.StatusCode(), string(rel.Body))
	ev.waitFor(t, "s1", engine.StatusCompleted)
	require.EqualValues(t, 1, ev.charged.Load())
}
