package main

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// TestMain lets the chaos scenario re-run this test binary as its worker
// processes (`<binary> bench -scenario chaos-worker`), as it re-runs graft,
// and the server tests run it as `<binary> server ...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "bench" || os.Args[1] == "server") {
		main()
		os.Exit(0)
	}
	testenv.Main(m)
}

// TestChaosHarness runs the chaos scenario small and without faults: the
// harness starts its own PostgreSQL and Redis, its worker processes and its
// fake provider, runs every operation to its end and reads the books. The
// benchmark itself, with faults, is `graft bench -scenario chaos`; its
// counts are measured there, not asserted here, while the engine defects it
// finds are being fixed.
func TestChaosHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server and worker processes")
	}
	t.Parallel()
	s, err := runChaos(benchOpts{n: 100, workers: 2, limitConc: 10, limitRate: 200})
	require.NoError(t, err)
	t.Log(s.details + s.line)
	require.Regexp(t, regexp.MustCompile(`^chaos n=100 workers=2 kills=0 pg_restarts=0 lost=\d+ duplicate_effects=\d+ missing_refunds=\d+ mirror_mismatches=\d+ limit_violations=\d+ elapsed_s=[0-9.]+\n$`), s.line)
	require.Zero(t, s.lost, "every operation ran to its end")
	require.Equal(t, 100, s.completed+s.cancelled+s.failed)
	require.Zero(t, s.violations, "the limiter held the provider to its limits")
	require.Zero(t, s.mirrorMismatches, "the legacy table shows every run's end")
}
