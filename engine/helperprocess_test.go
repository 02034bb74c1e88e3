package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Worker subprocesses: the test binary re-executed with
// -test.run=^TestCrashHelperProcess$ and GRAFT_HELPER=1 runs an engine and a
// worker on the parent test's schema, so a test can kill a real worker
// process with SIGKILL or run several of them against one database.

const (
	rbHelperEnv       = "GRAFT_HELPER"
	rbHelperSchemaEnv = "GRAFT_HELPER_SCHEMA"
	rbHelperLeaseEnv  = "GRAFT_HELPER_LEASE_TTL"
	rbHelperUnloadEnv = "GRAFT_HELPER_UNLOAD_AFTER"
	rbHelperReady     = "GRAFT-HELPER-READY"
)

// rbStepIn names one step of a process-test workflow.
type rbStepIn struct {
	Step string
	// Block makes the activity wait for the workflow's row in the release
	// table, so a test can kill the process while it is in flight.
	Block bool
}

// rbProcessDefs are the definitions both the subprocesses and the parent
// test register: activities record each execution in the schema's
// executions table, so counts survive the process that ran them.
func rbProcessDefs(db *sqlx.DB, schema string) []engine.Definition {
	pid := os.Getpid()
	step := engine.NewActivity("proc.step", func(ctx context.Context, in rbStepIn) (string, error) {
		wfID := engine.GetActivityInfo(ctx).Workflow.WorkflowID
		if err := rbRecord(ctx, db, schema, wfID, in.Step, pid); err != nil {
			return "", err
		}
		if in.Block {
			if err := rbWaitReleased(ctx, db, schema, wfID); err != nil {
				return "", err
			}
		}
		return in.Step + "-done", nil
	}).WithOptions(engine.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &engine.RetryPolicy{InitialInterval: 50 * time.Millisecond},
	})
	// crash: three steps, the second blocks until released.
	crash := engine.NewWorkflow("proc.crash", func(ctx engine.Context, tag string) (string, error) {
		var out []string
		for i, name := range []string{"one", "two", "three"} {
			v, err := step.Run(ctx, rbStepIn{Step: name, Block: i == 1})
			if err != nil {
				return "", err
			}
			out = append(out, v)
		}
		return tag + ":" + strings.Join(out, ","), nil
	})
	// fleet: an activity, a sleep long enough to unload the run (so any
	// process may resume it), and a final activity.
	fleet := engine.NewWorkflow("proc.fleet", func(ctx engine.Context, n int) (string, error) {
		a, err := step.Run(ctx, rbStepIn{Step: "first"})
		if err != nil {
			return "", err
		}
		if err := engine.Sleep(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
		b, err := step.Run(ctx, rbStepIn{Step: "final"})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d:%s,%s", n, a, b), nil
	})
	return []engine.Definition{step, crash, fleet}
}

// TestCrashHelperProcess is not a test: it is the body of a worker
// subprocess (see rbSpawn). It runs until its stdin is closed or it is
// killed.
func TestCrashHelperProcess(t *testing.T) {
	t.Parallel()
	if os.Getenv(rbHelperEnv) != "1" {
		t.Skip("worker subprocess body for the crash and multi-process tests")
	}
	schema := os.Getenv(rbHelperSchemaEnv)
	lease, err := time.ParseDuration(os.Getenv(rbHelperLeaseEnv))
	require.NoError(t, err)
	unload, err := time.ParseDuration(os.Getenv(rbHelperUnloadEnv))
	require.NoError(t, err)
	db := testenv.DB(t)
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema,
		LeaseTTL: lease, UnloadAfter: unload, PollInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.Register(rbProcessDefs(db, schema)...))
	w, err := e.NewWorker(engine.WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	fmt.Println(rbHelperReady)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin or exits
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(ctx))
}

// rbProc is a running worker subprocess.
type rbProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *rbSyncBuffer
	waited chan struct{}
	err    error
}

// rbSpawn starts a worker subprocess on schema (call waitReady before
// relying on it). It is stopped (stdin closed, then killed if it lingers) at cleanup.
func rbSpawn(t *testing.T, schema string, leaseTTL, unloadAfter time.Duration) *rbProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		rbHelperEnv+"=1",
		rbHelperSchemaEnv+"="+schema,
		rbHelperLeaseEnv+"="+leaseTTL.String(),
		rbHelperUnloadEnv+"="+unloadAfter.String(),
		"GRAFT_DATABASE_URL="+testenv.DatabaseURL(),
	)
	p := &rbProc{cmd: cmd, out: &rbSyncBuffer{ready: make(chan struct{})}, waited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	p.stdin = stdin
	require.NoError(t, cmd.Start())
	go func() { p.err = cmd.Wait(); close(p.waited) }()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		select {
		case <-p.waited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.waited
		}
		if t.Failed() {
			t.Logf("worker subprocess %d output:\n%s", cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// waitReady waits until the subprocess's worker runs.
func (p *rbProc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.out.ready:
	case <-p.waited:
		t.Fatalf("worker subprocess exited before it was ready: %v\n%s", p.err, p.out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("worker subprocess not ready within 60s:\n%s", p.out.String())
	}
}

// kill sends SIGKILL and waits for the process to die.
func (p *rbProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-p.waited:
	case <-time.After(10 * time.Second):
		t.Fatal("worker subprocess did not die after SIGKILL")
	}
	require.Error(t, p.err, "the process was killed, not exited")
}

// rbSyncBuffer collects a subprocess's output and closes ready when the
// readiness line appears.
type rbSyncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (b *rbSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), rbHelperReady+"\n") {
		b.once.Do(func() { close(b.ready) })
	}
	return n, err
}

func (b *rbSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
