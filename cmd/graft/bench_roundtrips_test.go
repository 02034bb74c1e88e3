package main

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// The roundtrips scenario prints its one line and drops its schema.
func TestBenchRoundTrips(t *testing.T) {
	t.Parallel()
	schema := testenv.Name(t) + "_rt"
	var out bytes.Buffer
	require.NoError(t, benchRoundTrips(&out, benchOpts{n: 20, schema: schema}))
	require.Regexp(t, regexp.MustCompile(`^roundtrips iterations=20 round_trips_per_iter=4 ms_per_iter=[0-9.]+ p50_ms=[0-9.]+ cpu_us_per_iter=[0-9]+\n$`), out.String())
	db, err := openDB(1)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.Get(&n, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, schema))
	require.Zero(t, n, "schema %s left behind", schema)
}
