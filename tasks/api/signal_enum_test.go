package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// urgency lists its values (typeschema's Enum), so the schema its workers
// publish refuses another.
type urgency string

func (urgency) Enum() []string { return []string{"low", "high"} }

func (u *urgency) UnmarshalText(b []byte) error {
	if s := urgency(b); s != "low" && s != "high" {
		return errors.New("unknown urgency")
	}
	*u = urgency(b)
	return nil
}

type urgentConfirm struct {
	Approved bool    `json:"approved"`
	Urgency  urgency `json:"urgency"`
}

// A payload value outside an enumeration (a misspelled operator action)
// is refused with a 400 naming where it is and the values allowed, by a
// server that registers the kind (decoding into the Go type) and by one
// that does not (checking the workers' published JSON Schema); the run
// gets nothing.
func TestSignalEnumRefused(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ev.start(t, "w1", "acme", orderIn{Item: "1", Wait: true})
	ev.waitFor(t, "w1", engine.StatusWaiting)

	_, c2 := ev.unregistered(t)

	send := func(c *api.ClientWithResponses, name, payload string) *api.SignalOperationResponse {
		t.Helper()
		res, err := c.SignalOperationWithResponse(t.Context(), "w1", api.SignalRequest{Name: name, Reason: "test",
			Payload: ptr(json.RawMessage(payload))})
		require.NoError(t, err)
		return res
	}
	refused := func(res *api.SignalOperationResponse, detail string) {
		t.Helper()
		require.Equal(t, http.StatusBadRequest, res.StatusCode(), string(res.Body))
		var p struct {
			Detail string `json:"detail"`
		}
		require.NoError(t, json.Unmarshal(res.Body, &p), string(res.Body))
		require.Contains(t, p.Detail, detail)
		require.Contains(t, string(res.Body), `"payload"`)
	}
	for _, c := range []*api.ClientWithResponses{ev.client(t, "operator"), c2} {
		refused(send(c, "graft.cancel.operator", `{"action":"retyr"}`),
			`payload of signal graft.cancel.operator: at /action: got "retyr", want one of "retry", "resolve"`)
		// Nor an action the run would ignore for what it leaves out.
		refused(send(c, "graft.cancel.operator", `{"step":"s1"}`),
			`payload of signal graft.cancel.operator: at /action: missing, want one of "retry", "resolve"`)
		refused(send(c, "graft.cancel.operator", `{"action":"resolve","note":"refunded"}`),
			`payload of signal graft.cancel.operator: at /step: missing, a resolve names the step (StepReport.Step) it resolves`)
	}

	// The operator signal's schema, as the API lists it, names the actions.
	op, err := ev.client(t, "operator").GetOperationWithResponse(t.Context(), "w1")
	require.NoError(t, err)
	sigs := *op.JSON200.Signals
	action := (*sigs[len(sigs)-1].Schema)["properties"].(map[string]any)["action"].(map[string]any)
	require.Equal(t, []any{"retry", "resolve"}, action["enum"])

	// A worker of a newer build publishes confirm with an enumeration; the
	// server that does not register order checks it.
	e3 := testenv.Engine(t, &engine.Config{Schema: ev.e.Schema()})
	require.NoError(t, e3.Register(engine.NewWorkflow("order", func(engine.Context, orderIn) (string, error) { return "", nil }).
		WithSignals(engine.DeclareSignal[urgentConfirm]("confirm", "the customer confirms (or refuses) the order"))))
	testenv.Worker(t, e3, engine.WorkerConfig{Queues: []string{"publish-only"}})
	testenv.Eventually(t, 30*time.Second, func() bool {
		op, err := c2.GetOperationWithResponse(t.Context(), "w1")
		return err == nil && op.JSON200 != nil && strings.Contains(string(op.Body), "urgency")
	}, "the newer worker's declarations were not published")
	refused(send(c2, "confirm", `{"approved":true,"urgency":"hgh"}`),
		`payload of signal confirm: at /urgency: got "hgh", want one of "low", "high"`)
	require.Equal(t, engine.StatusWaiting, ev.status(t, "w1"), "a refused signal reached the run")
}
