package graftsync_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMirrorsEveryColumn runs a renewal through to the end and checks every
// column the mapping names, and that the columns it does not name are
// untouched.
func TestMirrorsEveryColumn(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{})
	ev.insertRow("op-1")
	before, _ := ev.row("op-1")
	out, err := ev.result(ev.start("op-1", renewal{Domain: "example.com", Years: 2, ChargeFailures: 2}, nil))
	require.NoError(t, err)
	require.Equal(t, "R-example.com", out)

	r := ev.waitStatus("op-1", "done")
	require.Equal(t, "registering", r.Step.String)
	require.Equal(t, 1, r.Attempts, "attempts of the last activity (register)")
	require.False(t, r.LastError.Valid)
	require.Equal(t, 100.0, r.Progress.Float64)
	require.Equal(t, time.Date(2032, 3, 1, 0, 0, 0, 0, time.UTC), r.ExpiresAt.Time.UTC())
	require.Equal(t, "R-example.com", r.Ref.String)
	require.True(t, r.UpdatedAt.After(before.UpdatedAt) || r.UpdatedAt.Equal(before.UpdatedAt))
	// Untouched: columns the mapping does not name.
	require.Equal(t, "renewal", r.Kind)
	require.Equal(t, "acme", r.Customer.String)
	require.False(t, r.RowVersion.Valid)
	_, state, ok := ev.state("op-1")
	require.True(t, ok)
	require.Equal(t, "completed", state)
}
