package api

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A job's batch is paced from the previous batch's planned end when that is
// just past, from its own start otherwise (no plan, a plan too far behind,
// a plan forgotten after a pause or a failure), and never from the future.
func TestBulkPaceStartsFromThePlan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var p bulkPace
	require.Equal(t, t0, p.start("j", t0), "no plan yet")
	p.planned("j", t0)
	for _, tc := range []struct {
		name string
		now  time.Time
		want time.Time
	}{
		{"just after the plan", t0.Add(80 * time.Millisecond), t0},
		{"at the catch-up bound", t0.Add(bulkMaxCatchUp), t0},
		{"too far behind", t0.Add(bulkMaxCatchUp + time.Millisecond), t0.Add(bulkMaxCatchUp + time.Millisecond)},
		{"before the plan", t0.Add(-time.Millisecond), t0.Add(-time.Millisecond)},
	} {
		require.Equal(t, tc.want, p.start("j", tc.now), tc.name)
	}
	require.Equal(t, t0.Add(time.Millisecond), p.start("other", t0.Add(time.Millisecond)), "plans are per job")
	p.planned("j", time.Time{})
	require.Equal(t, t0.Add(time.Millisecond), p.start("j", t0.Add(time.Millisecond)), "a forgotten plan")
}
