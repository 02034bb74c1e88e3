package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Proc is the test binary re-run as a helper process (a worker to kill with
// SIGKILL, for instance).
type Proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

// Spawn re-runs the test binary with only the test named testName and the
// extra environment (KEY=value). The helper's stdin is a pipe closed when
// the test ends, so a helper that blocks reading it cannot outlive the test.
func Spawn(t testing.TB, testName string, env ...string) *Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+testName+"$", "-test.v=false")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &Proc{cmd: cmd, lines: make(chan string, 64), done: make(chan error, 1)}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return p
}

// WaitLine waits until the helper prints line, failing the test if it exits
// first or the deadline passes.
func (p *Proc) WaitLine(t testing.TB, line string, deadline time.Duration) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("helper exited before printing %q", line)
			}
			if l == line {
				return
			}
		case <-timeout:
			t.Fatalf("helper did not print %q within %v", line, deadline)
		}
	}
}

// Kill sends SIGKILL (no deferred code runs in the helper) and reaps it.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	err := p.cmd.Wait()
	require.Error(t, err, "helper should die of SIGKILL")
	require.Contains(t, fmt.Sprint(err), "killed")
}
