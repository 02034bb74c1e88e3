package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks/api"
)

// A server that does not register a kind (graft server registers none)
// offers the signals the kind's workers published when they started, and
// checks a payload against their JSON Schema as strictly as a server that
// registers the kind checks it against the Go type; with nothing
// published it offers only cancel's operator signal, and says why.
func TestPublishedSignals(t *testing.T) {
	ev := newEnv(t, api.Config{}) // its worker published order's signals
	ev.start(t, "w1", "acme", orderIn{Item: "1", Wait: true})
	ev.waitFor(t, "w1", engine.StatusWaiting)

	// The server of the workers' process registers order.
	op, err := ev.client(t, "viewer").GetOperationWithResponse(t.Context(), "w1")
	require.NoError(t, err)
	require.True(t, *op.JSON200.KindRegistered)
	require.Equal(t, api.SignalsRegistered, *op.JSON200.SignalsSource)

	// A second process, sharing the database, that registers no workflow.
	e2, c2 := ev.unregistered(t)

	op2, err := c2.GetOperationWithResponse(t.Context(), "w1")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, op2.StatusCode(), string(op2.Body))
	o := op2.JSON200
	require.False(t, *o.KindRegistered)
	require.Equal(t, api.SignalsPublished, *o.SignalsSource)
	require.NotNil(t, o.SignalsPublishedAt)
	require.Contains(t, *o.SignalsPublishedBy, "(")
	require.Len(t, *o.Signals, 2)
	sig := (*o.Signals)[0]
	require.Equal(t, "confirm", sig.Name)
	require.Equal(t, "the customer confirms (or refuses) the order", *sig.Description)
	require.Equal(t, "boolean", (*sig.Schema)["properties"].(map[string]any)["approved"].(map[string]any)["type"])
	require.Equal(t, false, (*sig.Schema)["additionalProperties"])
	require.Equal(t, "graft.cancel.operator", (*o.Signals)[1].Name)

	send := func(name, payload string) *api.SignalOperationResponse {
		t.Helper()
		req := api.SignalRequest{Name: name, Reason: "test"}
		if payload != "" {
			req.Payload = ptr(json.RawMessage(payload))
		}
		res, err := c2.SignalOperationWithResponse(t.Context(), "w1", req)
		require.NoError(t, err)
		return res
	}
	refused := func(res *api.SignalOperationResponse, field, detail string) {
		t.Helper()
		require.Equal(t, http.StatusBadRequest, res.StatusCode(), string(res.Body))
		var p struct {
			Detail string `json:"detail"`
			Errors []struct {
				Field string `json:"field"`
			} `json:"errors"`
		}
		require.NoError(t, json.Unmarshal(res.Body, &p), string(res.Body))
		require.Contains(t, p.Detail, detail)
		require.Contains(t, string(res.Body), `"`+field+`"`)
	}
	refused(send("confirm", `{"approved":"yes"}`), "payload", `payload of signal confirm: at /approved: got string, want boolean`)
	refused(send("confirm", `{"approved":true,"urgent":true}`), "payload", `'urgent' not allowed`)
	refused(send("confirm", `null`), "payload", `signal "confirm" carries a JSON object, and none was given`)
	refused(send("confirm", ``), "payload", `signal "confirm" carries a JSON object, and none was given`)
	refused(send("nudge", `{}`), "name", `the kind "order" declares no signal "nudge" (its workers published declared: confirm; and every kind takes graft.cancel.operator)`)
	// The operator signal is checked against its Go type, as before.
	refused(send("graft.cancel.operator", `{"action":"retry","x":1}`), "payload", `unknown field "x"`)
	require.Equal(t, engine.StatusWaiting, ev.status(t, "w1"), "a refused signal reached the run")

	// A bulk signal's selection is checked the same way.
	bulk, err := c2.CreateBulkJobWithResponse(t.Context(), api.BulkRequest{Action: api.BulkActionSignal, DryRun: ptr(true), Reason: "r",
		Filter: &api.BulkFilter{Ids: &[]string{"w1"}}, Signal: &api.BulkSignal{Name: "confirm", Payload: ptr(json.RawMessage(`{"approved":1}`))}})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, bulk.StatusCode(), string(bulk.Body))
	var pv api.BulkPreview
	require.NoError(t, json.Unmarshal(bulk.Body, &pv))
	require.Zero(t, pv.Count)
	require.Equal(t, "payload: payload of signal confirm: at /approved: got number, want boolean", pv.Ineligible[0].Why)

	// A good payload goes to the run, which the first process runs.
	res := send("confirm", `{"approved":true}`)
	require.Equal(t, http.StatusAccepted, res.StatusCode(), string(res.Body))
	ev.waitFor(t, "w1", engine.StatusCompleted)
	require.EqualValues(t, 1, ev.charged.Load())

	// With nothing published, only the operator signal, and why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = e2.DB().ExecContext(ctx, `DELETE FROM "`+e2.Schema()+`".published_signals WHERE workflow_type = 'order'`)
	require.NoError(t, err)
	ev.start(t, "w2", "acme", orderIn{Item: "2", Wait: true})
	ev.waitFor(t, "w2", engine.StatusWaiting)
	op2, err = c2.GetOperationWithResponse(t.Context(), "w2")
	require.NoError(t, err)
	o = op2.JSON200
	require.False(t, *o.KindRegistered)
	require.Equal(t, api.SignalsNone, *o.SignalsSource)
	require.Nil(t, o.SignalsPublishedAt)
	require.Len(t, *o.Signals, 1)
	require.Equal(t, "graft.cancel.operator", (*o.Signals)[0].Name)
	res, err = c2.SignalOperationWithResponse(t.Context(), "w2", api.SignalRequest{Name: "confirm", Reason: "r", Payload: ptr(json.RawMessage(`{"approved":true}`))})
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, res.StatusCode())
	require.Contains(t, string(res.Body), `the kind \"order\" is not registered in this server and its workers published no signal declarations`)
}
