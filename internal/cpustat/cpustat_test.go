package cpustat_test

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/cpustat"
)

// burn spends some CPU until the process's CPU time, read by read, has
// moved (the clocks tick at their own granularity).
func burn(t *testing.T, read func() int64) (before, after int64) {
	t.Helper()
	before = read()
	x := 0
	for i := 0; ; i++ {
		x += i * i
		if i%1_000_000 == 0 {
			if after = read(); after > before {
				runtime.KeepAlive(x)
				return before, after
			}
		}
		require.Less(t, i, 1<<40, "the CPU time never moved")
	}
}

// This process's CPU time grows as it works (Unix).
func TestProcess(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
		require.Zero(t, cpustat.Process())
		return
	}
	before, after := burn(t, func() int64 { return int64(cpustat.Process()) })
	require.Positive(t, before)
	require.Greater(t, after, before)
	require.GreaterOrEqual(t, cpustat.Children(), time.Duration(0))
}

// A process's schedstat, read once or again and again through an open
// Sched, grows as it works (Linux); a process that does not exist reads -1.
func TestSched(t *testing.T) {
	if runtime.GOOS != "linux" {
		require.EqualValues(t, -1, cpustat.SchedNS(os.Getpid()))
		return
	}
	s := cpustat.OpenSched(os.Getpid())
	require.NotNil(t, s)
	defer s.Close()
	before, after := burn(t, s.NS)
	require.Positive(t, before)
	require.Greater(t, after, before)
	require.GreaterOrEqual(t, cpustat.SchedNS(os.Getpid()), after)

	var none *cpustat.Sched
	require.EqualValues(t, -1, none.NS())
	require.NoError(t, none.Close())
	require.Nil(t, cpustat.OpenSched(-1))
	require.EqualValues(t, -1, cpustat.SchedNS(-1))
}
