package api_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

// TestCancelDryRunChangesNothing: a cancel with dry_run returns the refund
// plan (each compensation with the step it undoes and where that step
// stands) and leaves the run, its steps and the audit log as they were; the
// real cancel then runs exactly that plan.
func TestCancelDryRunChangesNothing(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	op := ev.client(t, "operator")
	ev.start(t, "w", "acme", orderIn{Item: "d", Wait: true})
	ev.waitFor(t, "w", engine.StatusWaiting)

	type snapshot struct {
		Status, Cancel string
		Updated        time.Time
		Steps, Audit   int
	}
	read := func() snapshot {
		var s snapshot
		require.NoError(t, ev.e.DB().QueryRow(`SELECT status, COALESCE(cancel_reason, ''), updated_at,
			(SELECT count(*) FROM `+ev.e.Schema()+`.steps st WHERE st.run_id = r.run_id),
			(SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE operation_id = 'w')
			FROM `+ev.e.Schema()+`.runs r WHERE workflow_id = 'w'`).Scan(&s.Status, &s.Cancel, &s.Updated, &s.Steps, &s.Audit))
		return s
	}
	before := read()
	dry, err := op.CancelOperationWithResponse(ctx, "w", api.CancelRequest{Reason: "preview", DryRun: ptr(true)})
	require.NoError(t, err)
	require.Equal(t, 200, dry.StatusCode(), string(dry.Body))
	require.True(t, *dry.JSON200.DryRun)
	require.Equal(t, api.StatusWaiting, dry.JSON200.Status)
	require.Nil(t, dry.JSON200.RefundPlanError)
	plan := *dry.JSON200.RefundPlan
	require.Len(t, plan, 1)
	require.Equal(t, "release", plan[0].Undo)
	require.Equal(t, "reserve", *plan[0].StepName)
	require.Equal(t, "completed", *plan[0].StepStatus)
	require.Equal(t, before, read(), "a dry run changes nothing")
	info, err := ev.e.Client().Describe(ctx, "w")
	require.NoError(t, err)
	require.False(t, info.CancelRequested)

	// A dry run on a closed operation is refused like a cancel.
	ev.failCharge.Store(true)
	ev.start(t, "f", "acme", orderIn{Item: "f"})
	ev.waitFor(t, "f", engine.StatusFailed)
	closed, err := op.CancelOperationWithResponse(ctx, "f", api.CancelRequest{Reason: "preview", DryRun: ptr(true)})
	require.NoError(t, err)
	require.Equal(t, 409, closed.StatusCode(), string(closed.Body))

	real, err := op.CancelOperationWithResponse(ctx, "w", api.CancelRequest{Reason: "customer asked"})
	require.NoError(t, err)
	require.Equal(t, 200, real.StatusCode(), string(real.Body))
	require.Nil(t, real.JSON200.DryRun)
	require.Equal(t, plan, *real.JSON200.RefundPlan)
	ev.waitFor(t, "w", engine.StatusCancelled)
	require.EqualValues(t, 1, ev.released.Load())
}

// TestFlagPreviewThroughTheAPI: an admin previews a flag change over the
// pending legacy rows and sees the counts before and after; nothing
// changes; only admins may preview; a bad rule names the problem.
func TestFlagPreviewThroughTheAPI(t *testing.T) {
	e := testenv.Engine(t, nil)
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	s := pq.QuoteIdentifier(e.Schema())
	_, err := e.DB().Exec(`CREATE TABLE ` + s + `.legacy_ops (id text PRIMARY KEY, kind text NOT NULL, domain text, status text NOT NULL DEFAULT 'pending')`)
	require.NoError(t, err)
	_, err = e.DB().Exec(`INSERT INTO ` + s + `.legacy_ops (id, kind, domain) SELECT 'op-' || i, 'order', 'd' || i || CASE i % 2 WHEN 0 THEN '.com' ELSE '.fr' END FROM generate_series(1, 400) i`)
	require.NoError(t, err)
	in, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: testenv.DatabaseURL(), Source: &tasks.Source{
		Table: e.Schema() + ".legacy_ops", ID: "id", Kind: "kind", Kinds: map[string]tasks.KindSpec{"order": {Workflow: "order"}},
		Key:    tasks.KeySpec{Column: "domain", Transform: tasks.TransformTLD},
		Status: tasks.StatusSpec{Column: "status", Pending: "pending", Graft: "graft"}, Input: map[string]string{"item": "domain"}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	ev := newEnvOn(t, e, api.Config{Intakes: []*tasks.Intake{in}})

	body := `{"default_percent":0,"key_rules":[{"keys":["com"],"percent":100}]}`
	code, res := ev.do(t, "operator", "POST", "/v1/flags/order/preview", body)
	require.Equal(t, 403, code, res)
	code, res = ev.do(t, "admin", "POST", "/v1/flags/order/preview", body)
	require.Equal(t, 200, code, res)
	var p api.FlagPreview
	require.NoError(t, json.Unmarshal([]byte(res), &p))
	require.EqualValues(t, 400, p.Scanned)
	require.False(t, p.Estimate)
	require.Equal(t, api.RouteCounts{Graft: 0, Legacy: 400}, p.Before, "no flag yet: everything is legacy")
	require.Equal(t, api.RouteCounts{Graft: 200, Legacy: 200}, p.After)
	require.EqualValues(t, 200, p.ToGraft)
	require.Len(t, p.ByKey, 2)

	code, res = ev.do(t, "admin", "POST", "/v1/flags/order/preview", `{"default_percent":100,"limit":50}`)
	require.Equal(t, 200, code, res)
	require.NoError(t, json.Unmarshal([]byte(res), &p))
	require.True(t, p.Estimate)
	require.EqualValues(t, 50, p.Scanned)
	require.Contains(t, *p.Note, "estimate")

	code, res = ev.do(t, "admin", "POST", "/v1/flags/order/preview", `{"default_percent":150}`)
	require.Equal(t, 400, code, res)
	require.Contains(t, res, "outside 0-100")
	code, res = ev.do(t, "admin", "POST", "/v1/flags/order/preview", `{"key_rules":[{"keys":["example.com"],"percent":100}]}`)
	require.Equal(t, 400, code, res)
	require.Contains(t, res, `"field":"key_rules"`)
	require.Contains(t, res, `rule 1 (example.com=100): key \"example.com\" never matches: kind order keys on the last dot-separated label, lower-cased (transform tld); write \"com\"`)
	code, res = ev.do(t, "admin", "POST", "/v1/flags/nope/preview", `{}`)
	require.Equal(t, 404, code, res)

	var pending int
	require.NoError(t, e.DB().Get(&pending, `SELECT count(*) FROM `+s+`.legacy_ops WHERE status = 'pending'`))
	require.Equal(t, 400, pending)
	var flags int
	require.NoError(t, e.DB().Get(&flags, `SELECT count(*) FROM `+s+`.flags`))
	require.Zero(t, flags, "a preview changes no flag")
}
