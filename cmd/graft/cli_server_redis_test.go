package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// TestServerLogsRedisOutageOnce runs graft server (this test binary as
// graft, a subprocess, so that go-redis's own logging to stderr is seen) on
// a private redis-server, stops that Redis twice and starts it again: the
// server's stderr says each outage once and each recovery once, however
// many dials fail meanwhile, and has none of go-redis's per-dial lines.
func TestServerLogsRedisOutageOnce(t *testing.T) {
	r, err := startRedis(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(r.kill)
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "server", "--addr", "127.0.0.1:0", "--schema", testenv.Schema(t), "--ui=false")
	cmd.Env = append(os.Environ(), "GRAFT_REDIS_URL="+r.URL)
	// The server's stderr goes to a file the test reads as it grows.
	errPath := filepath.Join(t.TempDir(), "stderr")
	errFile, err := os.Create(errPath)
	require.NoError(t, err)
	defer errFile.Close()
	cmd.Stderr = errFile
	stderr := func() string {
		b, err := os.ReadFile(errPath)
		require.NoError(t, err)
		return string(b)
	}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	var base string
	for base == "" && lines.Scan() {
		base, _ = strings.CutPrefix(lines.Text(), "graft server listening on ")
	}
	require.NotEmpty(t, base, "the server did not start: %s", stderr())
	go func() {
		for lines.Scan() {
		}
	}()
	ready := func() int {
		res, err := http.Get(base + "/readyz")
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	count := func(s string) int { return strings.Count(stderr(), s) }
	require.Equal(t, 200, ready())

	for outage := 1; outage <= 2; outage++ {
		r.kill()
		// Every /readyz dials Redis again (and fails): ten of them.
		for range 10 {
			require.Equal(t, http.StatusServiceUnavailable, ready())
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return count("Redis unavailable") == outage },
			"outage %d logged: %s", outage, stderr())
		require.NoError(t, r.start())
		testenv.Eventually(t, 20*time.Second, func() bool { return ready() == 200 }, "Redis answers again")
		testenv.Eventually(t, 10*time.Second, func() bool { return count("Redis available again") == outage },
			"recovery %d logged: %s", outage, stderr())
	}
	require.Equal(t, 2, count("Redis unavailable"), stderr())
	require.Equal(t, 2, count("Redis available again"), stderr())
	require.NotContains(t, stderr(), "failed to dial")
	require.NotContains(t, stderr(), r.URL[:len("redis://")]+":", "no password in the lines")
}
