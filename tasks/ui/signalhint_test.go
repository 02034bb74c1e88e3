package ui

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/internal/typeschema"
	"github.com/graftdev/graft/tasks/api"
)

// schemaFor is T's payload schema as the UI receives it: internal/typeschema's,
// through the API's JSON (as a registered or a published declaration alike).
func schemaFor[T any](t *testing.T) *map[string]any {
	t.Helper()
	return fixtureSchema[T]()
}

func fixtureSchema[T any]() *map[string]any {
	b, err := json.Marshal(typeschema.Of(reflect.TypeFor[T]()))
	if err != nil {
		panic(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		panic(err)
	}
	return &s
}

// fixtureConfirm is a declared signal's payload with a struct.
type fixtureConfirm struct {
	Approved bool    `json:"approved"`
	Note     *string `json:"note"`
}

type hintApproval struct {
	Approved bool      `json:"approved"`
	Note     *string   `json:"note"`
	At       time.Time `json:"at"`
	Lines    []int     `json:"lines"`
	Tags     map[string]uint8
	Inner    struct{ N float64 }
	Raw      json.RawMessage `json:"raw"`
	Skip     string          `json:"-"`
}

// Each signal's payload is shown as a compact shape of its JSON Schema,
// and its template is a payload the server accepts as it is.
func TestSignalShapeAndTemplate(t *testing.T) {
	s := schemaFor[hintApproval](t)
	require.Equal(t, `{"Inner"?: {"N"?: number}, "Tags"?: {string: integer, ...}, "approved"?: boolean, "at"?: string (date-time), `+
		`"lines"?: [integer, ...], "note"?: string | null, "raw"?: any JSON}`, schemaShape(s))
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(schemaTemplate(s)), &got))
	at, err := time.Parse(time.RFC3339, got["at"].(string))
	require.NoError(t, err, "the template's date-time is RFC 3339")
	require.WithinDuration(t, time.Now(), at, time.Hour)
	delete(got, "at")
	require.Equal(t, map[string]any{"approved": false, "note": "", "lines": []any{}, "Tags": map[string]any{}, "Inner": map[string]any{"N": float64(0)}, "raw": nil}, got)

	// cancel's operator signal, offered on every operation.
	op := schemaFor[cancel.OperatorAction](t)
	require.Equal(t, `{"action"?: "retry" | "resolve", "note"?: string, "step"?: string}`, schemaShape(op))
	require.Equal(t, `{"action":"retry","note":"","step":""}`, schemaTemplate(op))

	// A payload that is a pointer takes null at the top; one without a
	// type has no payload at all; a required field has no "?".
	require.Equal(t, `{"approved"?: boolean} | null`, schemaShape(schemaFor[*struct {
		Approved bool `json:"approved"`
	}](t)))
	require.Equal(t, "", schemaShape(nil))
	require.Equal(t, "", schemaTemplate(nil))
	req := map[string]any{"type": "object", "required": []any{"a"}, "properties": map[string]any{"a": map[string]any{"type": "integer"}, "b": map[string]any{"enum": []any{"x", "y"}}}}
	require.Equal(t, `{"a": integer, "b"?: "x" | "y"}`, schemaShape(&req))
	require.Equal(t, `{"a":0,"b":"x"}`, schemaTemplate(&req))
}

// signalChoice: "Use template" fills in the named signal's template; a
// change of the select keeps a typed payload but replaces an empty one or
// another signal's untouched template; an unknown name changes nothing.
func TestSignalChoice(t *testing.T) {
	op := &api.Operation{Signals: &[]api.SignalDecl{{Name: "confirm", Schema: schemaFor[struct {
		Approved bool `json:"approved"`
	}](t)}, {Name: cancel.OperatorSignal, Schema: schemaFor[cancel.OperatorAction](t)}}}
	for _, c := range []struct {
		q           map[string][]string
		name, value string
	}{
		{map[string][]string{"signal": {"confirm"}, "reason": {"r"}}, "confirm", `{"approved":false}`},
		{map[string][]string{"signal": {"confirm"}, "payload": {`{"approved":true}`}}, "confirm", `{"approved":false}`},
		{map[string][]string{"name": {cancel.OperatorSignal}, "payload": {`{"approved":false}`}}, cancel.OperatorSignal, `{"action":"retry","note":"","step":""}`},
		{map[string][]string{"name": {cancel.OperatorSignal}, "payload": {""}}, cancel.OperatorSignal, `{"action":"retry","note":"","step":""}`},
		{map[string][]string{"name": {cancel.OperatorSignal}, "payload": {`{"action":"retry"}`}}, cancel.OperatorSignal, `{"action":"retry"}`},
		{map[string][]string{"signal": {"nope"}}, "", ""},
		{map[string][]string{"live": {"0"}}, "", ""},
	} {
		data := map[string]any{}
		signalChoice(op, c.q, data)
		if c.name == "" {
			require.Empty(t, data, "%v", c.q)
			continue
		}
		require.Equal(t, c.name, data["SignalName"], "%v", c.q)
		require.Equal(t, c.value, data["SignalPayload"], "%v", c.q)
		require.Equal(t, c.q["reason"] != nil, data["SignalReason"] != "", "%v", c.q)
	}
}
