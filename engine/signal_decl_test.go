package engine_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type approval struct {
	Approved bool   `json:"approved"`
	Note     string `json:"note,omitempty"`
}

// TestDeclaredSignals: a workflow declares its signals with their payload
// types; CheckSignal refuses undeclared names, unknown workflows and
// payloads that do not decode strictly, naming why.
func TestDeclaredSignals(t *testing.T) {
	wf := engine.NewWorkflow("approve", func(ctx engine.Context, _ struct{}) (bool, error) {
		a, err := engine.GetSignalChannel[approval](ctx, "approval").Receive(ctx)
		return a.Approved, err
	})
	declared := wf.WithSignals(engine.DeclareSignal[approval]("approval", "a person approves or refuses"))
	require.Empty(t, wf.Signals(), "WithSignals returns a copy")
	require.Len(t, declared.Signals(), 1)
	require.Equal(t, reflect.TypeFor[approval](), declared.Signals()[0].Type())

	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(declared))
	sigs, ok := e.WorkflowSignals("approve")
	require.True(t, ok)
	require.Equal(t, "approval", sigs[0].Name)
	_, ok = e.WorkflowSignals("nope")
	require.False(t, ok)

	require.NoError(t, e.CheckSignal("approve", "approval", json.RawMessage(`{"approved":true}`)))
	for _, tc := range []struct {
		name, signal, payload string
		want                  error
	}{
		{"undeclared", "cancel", `{}`, engine.ErrUnknownSignal},
		{"wrong type", "approval", `{"approved":"yes"}`, engine.ErrBadInput},
		{"unknown field", "approval", `{"aproved":true}`, engine.ErrBadInput},
		{"trailing data", "approval", `{} {}`, engine.ErrBadInput},
	} {
		err := e.CheckSignal("approve", tc.signal, json.RawMessage(tc.payload))
		require.True(t, errors.Is(err, tc.want), "%s: %v", tc.name, err)
	}
	require.ErrorIs(t, e.CheckSignal("nope", "approval", nil), engine.ErrUnknownWorkflow)
}
