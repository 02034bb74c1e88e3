package pgconn_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/cpustat"
	"github.com/graftdev/graft/internal/pgconn"
)

// TestRoundTripCost measures what our connection stack spends on
// statements one at a time (GRAFT_RTT_COST=iterations): a pool of one
// Connector connection runs four prepared INSERT ... RETURNING in a row
// per iteration, each under a WithDeadline context as the engine's commits
// are, and it prints the process's CPU per iteration (getrusage, user and
// system) and the iteration's median time. It is the floor under
// bench -c 1's go_cpu_us_per_wf, whose workflow commits four times; it
// asserts nothing.
func TestRoundTripCost(t *testing.T) {
	spec := os.Getenv("GRAFT_RTT_COST")
	if spec == "" {
		t.Skip("GRAFT_RTT_COST not set")
	}
	n, err := strconv.Atoi(spec)
	require.NoError(t, err)
	db := openOne(t)
	table := fmt.Sprintf("rtt_cost_%d", time.Now().UnixNano())
	_, err = db.Exec(`CREATE TABLE ` + table + ` (id bigserial PRIMARY KEY, v text)`)
	require.NoError(t, err)
	defer func() { _, _ = db.Exec(`DROP TABLE ` + table) }()
	st, err := db.Prepare(`INSERT INTO ` + table + ` (v) VALUES ($1) RETURNING id`)
	require.NoError(t, err)
	defer st.Close()
	lat := make([]time.Duration, 0, n)
	cpu0, t0 := cpustat.Process(), time.Now()
	for range n {
		s := time.Now()
		for range 4 {
			ctx, cancel := pgconn.WithDeadline(context.Background(), time.Now().Add(10*time.Second))
			var id int64
			require.NoError(t, st.QueryRowContext(ctx, "x").Scan(&id))
			cancel()
		}
		lat = append(lat, time.Since(s))
	}
	cpu, el := cpustat.Process()-cpu0, time.Since(t0)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("roundtrip_cost iters=%d ms_per_iter=%.3f p50_ms=%.3f cpu_us_per_iter=%.0f\n", n,
		float64(el.Microseconds())/1e3/float64(n), float64(lat[n/2].Microseconds())/1e3, float64(cpu.Microseconds())/float64(n))
}
