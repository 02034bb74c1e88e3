package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Proc is the test binary re-run as a helper process (a worker to kill with
// SIGKILL, for instance). A test may spawn several.
//
// A helper announces its progress by printing whole lines to stdout
// (fmt.Println("ready")) and blocks reading stdin until it is killed; stdin
// is closed when the parent test ends, so a helper that blocks on it cannot
// outlive the test. Its stderr goes to the parent's.
type Proc struct {
	cmd *exec.Cmd

	mu      sync.Mutex
	lines   []string      // every line printed so far
	next    int           // lines before next were matched by WaitLine
	exited  bool          // stdout ended: the helper exited (or was killed)
	changed chan struct{} // closed, and replaced, when lines or exited change
}

// Spawn re-runs the test binary with only the test named testName and the
// extra environment (KEY=value). It is killed, if still running, when the
// test ends, and what it printed is logged if the test failed.
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
	p := &Proc{cmd: cmd, changed: make(chan struct{})}
	// Read stdout for as long as the helper writes it, whatever the test
	// waits for, so a helper is never stalled on a full pipe.
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.update(func() { p.lines = append(p.lines, s.Text()) })
		}
		p.update(func() { p.exited = true })
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("helper %s (pid %d) printed:\n%s", testName, cmd.Process.Pid, p.output())
		}
	})
	return p
}

func (p *Proc) update(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
}

// WaitLine waits until the helper prints line (after the line the previous
// WaitLine matched), failing the test if it exits first or the deadline
// passes. Call it from the test's goroutine.
func (p *Proc) WaitLine(t testing.TB, line string, deadline time.Duration) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		p.mu.Lock()
		for i := p.next; i < len(p.lines); i++ {
			if p.lines[i] == line {
				p.next = i + 1
				p.mu.Unlock()
				return
			}
		}
		exited, changed := p.exited, p.changed
		p.mu.Unlock()
		if exited {
			t.Fatalf("helper exited before printing %q", line)
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("helper did not print %q within %v", line, deadline)
		}
	}
}

func (p *Proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Kill sends SIGKILL (no deferred code runs in the helper), reaps it, and
// checks that it died of that signal rather than exited before.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	err := p.cmd.Wait()
	require.Error(t, err, "helper should die of SIGKILL")
	require.Contains(t, fmt.Sprint(err), "killed")
}

// WaitExit waits until the helper has exited on its own (a helper that kills
// itself, for instance) and reaps it, failing the test if the deadline
// passes first. It returns how the process ended.
func (p *Proc) WaitExit(t testing.TB, deadline time.Duration) error {
	t.Helper()
	timeout := time.After(deadline)
	for {
		p.mu.Lock()
		exited, changed := p.exited, p.changed
		p.mu.Unlock()
		if exited {
			return p.cmd.Wait()
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("helper did not exit within %v", deadline)
		}
	}
}
