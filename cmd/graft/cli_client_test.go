package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks/api"
)

// TestGeneratedResponsesHaveABody pins what bodyOf relies on: every
// response the generated client returns has a Body field of bytes.
func TestGeneratedResponsesHaveABody(t *testing.T) {
	ct := reflect.TypeOf(&api.ClientWithResponses{})
	n := 0
	for i := range ct.NumMethod() {
		m := ct.Method(i)
		if !strings.HasSuffix(m.Name, "WithResponse") {
			continue
		}
		rt := m.Type.Out(0)
		require.Equal(t, reflect.Pointer, rt.Kind(), m.Name)
		require.True(t, rt.Implements(reflect.TypeOf((*response)(nil)).Elem()), m.Name)
		f, ok := rt.Elem().FieldByName("Body")
		require.True(t, ok, "%s: %s has no Body", m.Name, rt)
		require.Equal(t, reflect.TypeOf([]byte(nil)), f.Type, m.Name)
		n++
	}
	require.Greater(t, n, 20)
}
