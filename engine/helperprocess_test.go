package engine_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
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
		wfID := engine.ActivityInfoOf(ctx).Workflow.WorkflowID
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
	// progress: one activity that heartbeats its progress 1..5 and, on a
	// first attempt, blocks at 3 until released; an attempt reports where
	// it resumed from.
	progress := engine.NewActivity("proc.progress", func(ctx context.Context, _ struct{}) (string, error) {
		from, _ := engine.HeartbeatDetails[int](ctx)
		wfID := engine.ActivityInfoOf(ctx).Workflow.WorkflowID
		if err := rbRecord(ctx, db, schema, wfID, fmt.Sprintf("from-%d", from), pid); err != nil {
			return "", err
		}
		for i := from + 1; i <= 5; i++ {
			engine.Heartbeat(ctx, i)
			if i == 3 && from == 0 {
				if err := rbWaitReleased(ctx, db, schema, wfID); err != nil {
					return "", err
				}
			}
		}
		return fmt.Sprintf("resumed from %d", from), nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: time.Minute})
	progressWF := engine.NewWorkflow("proc.progress", func(ctx engine.Context, _ struct{}) (string, error) {
		return progress.Run(ctx, struct{}{})
	})
	// poison: an activity whose input kills the worker process running it
	// (in a helper process; in the test's own process it only records that
	// it ran), at most two attempts.
	poison := engine.NewActivity("proc.poison", func(ctx context.Context, _ struct{}) (string, error) {
		info := engine.ActivityInfoOf(ctx)
		if err := rbRecord(ctx, db, schema, info.Workflow.WorkflowID, fmt.Sprintf("attempt-%d", info.Attempt), pid); err != nil {
			return "", err
		}
		if os.Getenv(rbHelperEnv) == "1" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			select {}
		}
		return "survived", nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: time.Minute,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 2}})
	poisonWF := engine.NewWorkflow("proc.poison", func(ctx engine.Context, _ struct{}) (string, error) {
		return poison.Run(ctx, struct{}{})
	})
	// backoff: an activity whose first attempt fails and whose retry comes
	// an hour later; later attempts succeed.
	flaky := engine.NewActivity("proc.flaky", func(ctx context.Context, _ struct{}) (int, error) {
		info := engine.ActivityInfoOf(ctx)
		if err := rbRecord(ctx, db, schema, info.Workflow.WorkflowID, fmt.Sprintf("attempt-%d", info.Attempt), pid); err != nil {
			return 0, err
		}
		if info.Attempt == 1 {
			return 0, engine.NewApplicationError("ProviderDown", "the provider is down", nil)
		}
		return info.Attempt, nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: time.Minute,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: time.Hour, MaximumAttempts: 5}})
	backoffWF := engine.NewWorkflow("proc.backoff", func(ctx engine.Context, _ struct{}) (int, error) {
		return flaky.Run(ctx, struct{}{})
	})
	return []engine.Definition{step, crash, fleet, progress, progressWF, poison, poisonWF, flaky, backoffWF}
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

// rbSpawn starts a worker subprocess on schema; wait for its rbHelperReady
// line before relying on it. It is killed, if still running, at cleanup.
func rbSpawn(t *testing.T, schema string, leaseTTL, unloadAfter time.Duration) *testenv.Proc {
	t.Helper()
	return testenv.Spawn(t, "TestCrashHelperProcess",
		rbHelperEnv+"=1",
		rbHelperSchemaEnv+"="+schema,
		rbHelperLeaseEnv+"="+leaseTTL.String(),
		rbHelperUnloadEnv+"="+unloadAfter.String(),
		"GRAFT_DATABASE_URL="+testenv.DatabaseURL(),
	)
}

// rbReadyWithin is how long a worker subprocess may take to start.
const rbReadyWithin = 60 * time.Second
