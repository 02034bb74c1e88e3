//go:build unix

package pgproc_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgproc"
)

// helperEnv names what a re-run of this test binary does as a helper
// process (see TestHelperServer).
const helperEnv = "PGPROC_TEST_HELPER"

// TestHelperServer is not a test: run by ownerDies as a helper process, it
// starts a server, prints its port and directory, and blocks until it is
// killed. With helperEnv=noguard it first kills the server's guard, as a
// signal to the whole process group would.
func TestHelperServer(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("a helper process, run by the tests that kill it")
	}
	s, err := pgproc.Start(pgproc.Config{})
	require.NoError(t, err)
	if mode == "noguard" {
		require.NoError(t, pgproc.KillGuardForTest(s))
	}
	fmt.Printf("server %d %s\n", s.Port, filepath.Dir(s.DataDir()))
	select {}
}

// ownerDies runs TestHelperServer in a helper process, SIGKILLs the helper
// once its server is up (no deferred code, no Close), and returns the
// server's port and directory.
func ownerDies(t *testing.T, mode string) (port int, dir string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServer$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the helper's server line")
	f := strings.Fields(line)
	require.Len(t, f, 3, "the helper printed %q", line)
	port, err = strconv.Atoi(f[1])
	require.NoError(t, err)
	dir = f[2]
	// Whatever this test finds, it leaves no server of the helper's behind.
	t.Cleanup(func() { pgproc.CloseDirForTest(dir) })
	require.True(t, accepts(port), "the helper's server accepts connections")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err = cmd.Wait()
	require.ErrorContains(t, err, "killed")
	return port, dir
}

// accepts reports whether something accepts TCP connections on port.
func accepts(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// gone reports whether a server's files are removed and its port refuses
// connections.
func gone(port int, dir string) bool {
	_, err := os.Stat(dir)
	return os.IsNotExist(err) && !accepts(port)
}

// eventually polls cond every 50ms until it holds or deadline passes.
func eventually(t *testing.T, deadline time.Duration, cond func() bool, msg string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A test binary that dies before its cleanup (SIGKILL, a -timeout panic)
// takes its server with it: pg_ctl daemonises the postmaster, which would
// otherwise run on, port and shared memory held, until the machine stops.
func TestServerDiesWithItsOwner(t *testing.T) {
	t.Parallel()
	port, dir := ownerDies(t, "guard")
	eventually(t, 2*time.Minute, func() bool { return gone(port, dir) },
		"the server of a SIGKILLed owner still runs (or its files are left)")
}

// A server whose owner died and whose guard died with it (a signal to the
// process group) is stopped and removed by the next Start on the machine;
// a server whose owner lives, here this test's, is left alone: CI runs
// many test binaries side by side.
func TestStartReapsServersOfDeadOwners(t *testing.T) {
	t.Parallel()
	mine, err := pgproc.Start(pgproc.Config{})
	require.NoError(t, err)
	defer mine.Close()
	port, dir := ownerDies(t, "noguard")
	require.True(t, accepts(port), "without its guard, the dead owner's server runs on")
	_, err = os.Stat(filepath.Join(dir, "data"))
	require.NoError(t, err)

	next, err := pgproc.Start(pgproc.Config{})
	require.NoError(t, err)
	defer next.Close()
	require.True(t, gone(port, dir), "Start left the server of a dead owner running (or its files)")
	require.True(t, accepts(mine.Port), "Start stopped the server of a live owner")
	_, err = os.Stat(mine.DataDir())
	require.NoError(t, err, "Start removed the files of a live owner's server")
}

// A server directory made before owners were recorded has no owner file:
// Start removes it once it is older than an hour and no postmaster runs
// for it (no postmaster.pid, or one naming a dead process). A young one
// may be a directory whose owner is being written, and one whose
// postmaster lives may be serving someone: both are left.
func TestStartReapsOldOwnerlessDirectories(t *testing.T) {
	t.Parallel()
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	old := time.Now().Add(-2 * time.Hour)
	// ownerless makes a server directory without an owner, modified at
	// modified, whose postmaster.pid names pid (none for 0).
	ownerless := func(pid int, modified time.Time) string {
		d, err := os.MkdirTemp("", "graft-pg-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		require.NoError(t, os.Mkdir(filepath.Join(d, "data"), 0o700))
		if pid != 0 {
			require.NoError(t, os.WriteFile(filepath.Join(d, "data", "postmaster.pid"),
				[]byte(fmt.Sprintf("%d\n%s\n", pid, filepath.Join(d, "data"))), 0o600))
		}
		require.NoError(t, os.Chtimes(d, modified, modified))
		return d
	}
	deadPostmaster := ownerless(dead.Process.Pid, old)
	noPostmaster := ownerless(0, old)
	young := ownerless(dead.Process.Pid, time.Now())
	livePostmaster := ownerless(os.Getpid(), old)

	require.NoError(t, pgproc.ReapOrphansForTest())
	for name, d := range map[string]string{"dead postmaster": deadPostmaster, "no postmaster.pid": noPostmaster} {
		_, err := os.Stat(d)
		require.True(t, os.IsNotExist(err), "an old ownerless directory with a %s was left", name)
	}
	for name, d := range map[string]string{"young": young, "live postmaster": livePostmaster} {
		_, err := os.Stat(d)
		require.NoError(t, err, "the %s ownerless directory was removed", name)
	}
}
