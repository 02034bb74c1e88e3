package graftsync_test

import (
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// The worker process is this test binary run again with these variables.
const (
	helperGraftEnv    = "GRAFT_SYNC_HELPER_GRAFT"
	helperLegacyEnv   = "GRAFT_SYNC_HELPER_LEGACY"
	helperSeparateEnv = "GRAFT_SYNC_HELPER_SEPARATE"
	helperBlockEnv    = "GRAFT_SYNC_HELPER_BLOCK"
	helperGuardEnv    = "GRAFT_SYNC_HELPER_GUARD"
)

// TestKilledWorkerConverges runs a renewal on a worker process, kills the
// process with SIGKILL between two steps (after the first is checkpointed,
// in the middle of the second), lets this process's worker resume the run,
// and checks that the legacy row ends showing the engine's state, in both
// modes. In separate-database mode the killed process was also the relay.
func TestKilledWorkerConverges(t *testing.T) {
	t.Parallel()
	for _, tc := range modes() {
		separate := tc.separate
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := newEnv(t, envOpts{separate: separate, noWorker: true, noStart: true, mapping: guarded(tc.guard, nil)})
			ev.insertRow("op-1")

			helper := testenv.Spawn(t, "TestHelperWorker", helperGraftEnv+"="+ev.graft, helperLegacyEnv+"="+ev.legacy, helperBlockEnv+"=1",
				helperSeparateEnv+"="+fmt.Sprint(separate), helperGuardEnv+"="+tc.guard)
			run := ev.start("op-1", renewal{Domain: "a.com", Years: 1}, nil)
			helper.WaitLine(t, "blocked", 30*time.Second)
			// The first step is checkpointed (and, in separate mode, relayed
			// by the worker process) before the second starts.
			ev.waitRow("op-1", func(r *opRow) bool { return r.Step.String == "checking" }, "first step mirrored")
			helper.Kill(t)

			// This process takes over: its worker resumes the run once the
			// dead worker's lease expires, and its relay the delivery.
			grafttest.StartWorker(t, ev.e, engine.WorkerConfig{})
			require.NoError(t, ev.mr.Start(grafttest.Context(t, time.Minute), ev.c))
			out, err := ev.result(run)
			require.NoError(t, err)
			require.Equal(t, "R-a.com", out)

			info, err := ev.c.Describe(grafttest.Context(t, time.Minute), "op-1")
			require.NoError(t, err)
			require.Equal(t, engine.StatusCompleted, info.Status)
			require.Equal(t, 2, info.Loads, "run by the killed worker, then resumed here")
			r := ev.waitStatus("op-1", "done")
			require.Equal(t, "registering", r.Step.String)
			require.Equal(t, 100.0, r.Progress.Float64)
			require.Equal(t, "R-a.com", r.Ref.String)
			if _, state, ok := ev.state("op-1"); ok {
				require.Equal(t, "completed", state)
			} else {
				require.Positive(t, r.RowVersion.Int64)
			}
			if separate {
				testenv.Eventually(t, 10*time.Second, func() bool { return len(ev.outbox()) == 0 }, "outbox drained")
			}
		})
	}
}

// TestHelperWorker is not a test: it is the worker process that
// TestKilledWorkerConverges kills. It runs a worker (and, in separate mode,
// the relay) on the parent's schemas until SIGKILL.
func TestHelperWorker(t *testing.T) {
	graft := os.Getenv(helperGraftEnv)
	if graft == "" {
		t.Skip("worker process for TestKilledWorkerConverges")
	}
	newEnv(t, envOpts{graft: graft, legacy: os.Getenv(helperLegacyEnv), separate: os.Getenv(helperSeparateEnv) == "true",
		mapping: guarded(os.Getenv(helperGuardEnv), nil)})
	// Block until SIGKILL. Should the parent die first, its end of stdin
	// closes and the helper leaves.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(1)
}
