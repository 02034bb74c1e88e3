package engine_test

import (
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// rbCrashEnv is an engine with the process-test definitions and no worker,
// and a worker subprocess on its schema, ready; leases last 2 s.
func rbCrashEnv(t *testing.T) (*engine.Engine, *testenv.Proc) {
	t.Helper()
	const lease = 2 * time.Second
	e := testenv.Engine(t, &engine.Config{LeaseTTL: lease})
	schema, db := e.Schema(), e.DB()
	rbTables(t, db, schema)
	require.NoError(t, e.Register(rbProcessDefs(db, schema)...))
	child := rbSpawn(t, schema, lease, 2*time.Second)
	child.WaitLine(t, rbHelperReady, rbReadyWithin)
	return e, child
}

// A worker process killed with SIGKILL while its workflow's second activity
// is in flight: once its lease expires, a worker in another process resumes
// the run by replay. The completed first activity is not run again, the
// in-flight second one runs again (at-least-once), and the result is right.
func TestCrashSIGKILLWorkerResumedElsewhere(t *testing.T) {
	t.Parallel()
	e, child := rbCrashEnv(t)
	schema, db, c := e.Schema(), e.DB(), e.Client()
	ctx := testenv.Ctx(t, 90*time.Second)
	// No worker runs in this process yet: the child claims the run.
	h, err := c.StartByName(ctx, "proc.crash", []byte(`"crash-1"`), &engine.StartOptions{ID: "crash-1"})
	require.NoError(t, err)

	// Kill the child once step one is durably recorded and step two is in
	// flight.
	rbWaitStep(t, c, "crash-1", "activity", "proc.step", "completed")
	testenv.Eventually(t, 30*time.Second, func() bool {
		n := rbExecCounts(t, db, schema, "crash-1")
		return n["one"] == 1 && n["two"] == 1
	}, "step two never started in the child")
	info, err := c.Describe(ctx, "crash-1")
	require.NoError(t, err)
	require.Equal(t, engine.StatusRunning, info.Status)
	require.Equal(t, 1, info.Loads)
	child.Kill(t)

	// Nothing moves while nobody runs the workflow.
	hist, err := c.History(ctx, "crash-1")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 1, "only step one is recorded")

	rbRelease(t, db, schema, "crash-1")
	testenv.Worker(t, e, engine.WorkerConfig{})
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"crash-1:one-done,two-done,three-done"`, string(out))

	require.Equal(t, map[string]int{"one": 1, "two": 2, "three": 1}, rbExecCounts(t, db, schema, "crash-1"),
		"completed activities are not run again; the one in flight is")
	info, err = c.Describe(ctx, "crash-1")
	require.NoError(t, err)
	require.Equal(t, engine.StatusCompleted, info.Status)
	require.Equal(t, 2, info.Loads, "loaded by the killed worker, then by the one that resumed it")
	hist, err = c.History(ctx, "crash-1")
	require.NoError(t, err)
	require.Len(t, hist, 1, "resumed in place, not as a new run")
	require.Len(t, hist[0].Steps, 3)
	for _, st := range hist[0].Steps {
		require.Equal(t, "completed", st.Status)
		require.Equal(t, 1, st.Attempts, "a re-execution after a crash is not a retry")
	}
}

// Heartbeat details outlive the worker process: an activity killed with
// SIGKILL after heartbeating progress 3 is run again by another process,
// whose attempt reads 3 from HeartbeatDetails and resumes there.
func TestCrashHeartbeatDetailsSurvive(t *testing.T) {
	t.Parallel()
	e, child := rbCrashEnv(t)
	schema, db, c := e.Schema(), e.DB(), e.Client()
	ctx := testenv.Ctx(t, 90*time.Second)
	h, err := c.StartByName(ctx, "proc.progress", []byte(`{}`), &engine.StartOptions{ID: "beat-1"})
	require.NoError(t, err)
	// Kill the child once progress 3 is saved (it blocks there).
	testenv.Eventually(t, 30*time.Second, func() bool {
		var d string
		err := db.QueryRowContext(ctx, `SELECT convert_from(details, 'UTF8') FROM `+pq.QuoteIdentifier(schema)+`.heartbeats
			WHERE run_id = $1`, h.RunID).Scan(&d)
		return err == nil && d == "3"
	}, "progress 3 never saved")
	child.Kill(t)

	testenv.Worker(t, e, engine.WorkerConfig{})
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"resumed from 3"`, string(out))
	require.Equal(t, map[string]int{"from-0": 1, "from-3": 1}, rbExecCounts(t, db, schema, "beat-1"))
}
