package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

// intakeEnv is the API over an engine whose "order" operations intake
// claims from a legacy table, with the intake as the API's Legacy.
func intakeEnv(t *testing.T) (*env, *tasks.Intake, string) {
	t.Helper()
	e := testenv.Engine(t, nil)
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	table := pq.QuoteIdentifier(e.Schema()) + ".orders"
	_, err := e.DB().Exec(`CREATE TABLE ` + table + ` (id text PRIMARY KEY, kind text NOT NULL, item text NOT NULL,
		region text NOT NULL, customer text, qty int NOT NULL DEFAULT 1, big bigint, placed_at timestamptz NOT NULL DEFAULT '2026-01-02T03:04:05Z',
		extra jsonb, status text NOT NULL DEFAULT 'new')`)
	require.NoError(t, err)
	in, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: testenv.DatabaseURL(), Source: &tasks.Source{
		Table: e.Schema() + ".orders", ID: "id", Kind: "kind", Kinds: map[string]tasks.KindSpec{"order": {Workflow: "order"}},
		Key: tasks.KeySpec{Column: "region"}, Status: tasks.StatusSpec{Column: "status", Pending: "new", Graft: "graft"},
		Customer: "customer", Input: map[string]string{"item": "item"}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	flags, err := tasks.NewFlags(tasks.FlagsConfig{DB: e.DB(), DatabaseURL: testenv.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = flags.Close() })
	_, err = flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "order", DefaultPercent: 100}, Actor: "test", Reason: "test"})
	require.NoError(t, err)
	return newEnvOn(t, e, api.Config{Legacy: in, Flags: flags}), in, table
}

// Operations intake started carry the run headers the API reads: a customer
// token sees its own intake-started operation and gets 404 for another
// customer's, and the key filter finds them by routing key.
func TestIntakeStartedOperationsAreScopedByCustomer(t *testing.T) {
	t.Parallel()
	ev, in, table := intakeEnv(t)
	_, err := ev.e.DB().Exec(`INSERT INTO ` + table + ` (id, kind, item, region, customer) VALUES
		('in-acme', 'order', 'a', 'eu', 'acme'), ('in-globex', 'order', 'g', 'us', 'globex')`)
	require.NoError(t, err)
	res, err := in.ClaimBatch(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2, res.Started)

	code, body := ev.do(t, "customer", "GET", "/v1/operations/in-acme", "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = ev.do(t, "customer", "GET", "/v1/operations/in-globex", "")
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = ev.do(t, "customer-other", "GET", "/v1/operations/in-globex", "")
	require.Equal(t, http.StatusOK, code, body)
	for _, tc := range []struct{ role, query, want string }{
		{"customer", "", "in-acme"},
		{"customer-other", "", "in-globex"},
		{"viewer", "?customer=globex", "in-globex"},
		{"viewer", "?key=eu", "in-acme"},
		{"customer", "?key=us", ""},
	} {
		_, body := ev.do(t, tc.role, "GET", "/v1/operations"+tc.query, "")
		var page api.OperationPage
		require.NoError(t, json.Unmarshal([]byte(body), &page), body)
		var ids []string
		for _, it := range page.Items {
			ids = append(ids, it.Id)
		}
		if tc.want == "" {
			require.Empty(t, ids, "%s %s", tc.role, tc.query)
		} else {
			require.Equal(t, []string{tc.want}, ids, "%s %s", tc.role, tc.query)
		}
	}
}

// GET /v1/operations/{id} shows the legacy row as the source declares it,
// typed, and the history shows the flag decision intake recorded.
func TestOperationShowsLegacyRowAndFlagDecision(t *testing.T) {
	t.Parallel()
	ev, in, table := intakeEnv(t)
	_, err := ev.e.DB().Exec(`INSERT INTO ` + table + ` (id, kind, item, region, customer, qty, big, extra) VALUES
		('lg-1', 'order', 'lamp', 'eu', 'acme', 3, 9007199254740993, '{"gift": true, "ref": 9007199254740993}')`)
	require.NoError(t, err)
	res, err := in.ClaimBatch(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, res.Started)
	ev.waitFor(t, "lg-1", engine.StatusCompleted)

	op, err := ev.client(t, "customer").GetOperationWithResponse(context.Background(), "lg-1")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, op.StatusCode(), string(op.Body))
	require.NotNil(t, op.JSON200.Legacy, string(op.Body))
	legacy := *op.JSON200.Legacy
	require.Equal(t, json.Number("3"), legacy["qty"], "numbers decode exactly, as json.Number")
	require.Equal(t, map[string]any{"id": "lg-1", "kind": "order", "item": "lamp", "region": "eu", "customer": "acme",
		"qty": json.Number("3"), "big": json.Number("9007199254740993"), "placed_at": "2026-01-02T03:04:05+00:00",
		"extra": map[string]any{"gift": true, "ref": json.Number("9007199254740993")}, "status": "graft"},
		map[string]any(legacy))
	// An integer beyond 2^53 is sent exactly, as a JSON number.
	require.Contains(t, string(op.Body), `"big":9007199254740993`)

	// An operation without a legacy row (started through the API) has none.
	ev.start(t, "api-1", "acme", orderIn{Item: "x"})
	op, err = ev.client(t, "operator").GetOperationWithResponse(context.Background(), "api-1")
	require.NoError(t, err)
	require.Nil(t, op.JSON200.Legacy)

	hist, err := ev.client(t, "customer").GetOperationHistoryWithResponse(context.Background(), "lg-1")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, hist.StatusCode(), string(hist.Body))
	var decisions []api.HistoryEvent
	for _, e := range hist.JSON200.Events {
		if e.Type == "flag_decision" {
			decisions = append(decisions, e)
		}
	}
	require.Len(t, decisions, 1, string(hist.Body))
	var detail map[string]any
	require.NoError(t, json.Unmarshal(*decisions[0].Detail, &detail))
	require.Equal(t, "graft", detail["route"])
	require.Equal(t, tasks.RuleDefault, detail["rule"])
	require.Equal(t, float64(tasks.Bucket("order", "lg-1")), detail["bucket"])
	require.Equal(t, float64(res.FlagsVersion), detail["flags_version"])
	require.Equal(t, "eu", detail["routing_key"])
	require.Equal(t, "order", *decisions[0].Name)
	require.Equal(t, "flag_decision", hist.JSON200.Events[0].Type, "the decision comes first")
}
