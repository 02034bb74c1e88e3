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
// in-flight second one runs again (at-least-once) as its second attempt,
// and the result is right.
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

	// Nothing moves while nobody runs the workflow. Step two's start was
	// made durable before it ran: its outcome is unknown, not "not done".
	hist, err := c.History(ctx, "crash-1")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 2, "step one is recorded, and step two's start")
	require.Equal(t, "started", hist[0].Steps[1].Status)
	require.Equal(t, 1, hist[0].Steps[1].Attempts)

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
	for i, st := range hist[0].Steps {
		require.Equal(t, "completed", st.Status)
		want := 1
		if i == 1 {
			want = 2 // the attempt lost with the killed worker counts
		}
		require.Equal(t, want, st.Attempts, "step %d", i+1)
	}
	// The attempt lost with the killed worker is kept, marked lost.
	att := hist[0].Steps[1].AttemptRecords
	require.Len(t, att, 2)
	require.Equal(t, 1, att[0].Attempt)
	require.True(t, att[0].Lost, "attempt 1 was lost with its worker")
	require.Equal(t, 2, att[1].Attempt)
	require.False(t, att[1].Lost)
	require.NoError(t, att[1].Error)
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

// An activity whose input kills its worker process (a poison input) counts
// an attempt each time it does: with MaximumAttempts 2, two worker processes
// die in it, and the next worker fails the step without running it a third
// time, so the run ends failed instead of killing a worker per lease TTL for
// ever.
func TestCrashPoisonActivityStopsAtMaximumAttempts(t *testing.T) {
	t.Parallel()
	e, first := rbCrashEnv(t)
	schema, db, c := e.Schema(), e.DB(), e.Client()
	ctx := testenv.Ctx(t, 90*time.Second)
	h, err := c.StartByName(ctx, "proc.poison", []byte(`{}`), &engine.StartOptions{ID: "poison-1"})
	require.NoError(t, err)
	require.Error(t, first.WaitExit(t, 60*time.Second), "the first worker dies in attempt 1")
	second := rbSpawn(t, schema, 2*time.Second, 2*time.Second)
	require.Error(t, second.WaitExit(t, 60*time.Second), "the second worker dies in attempt 2")
	require.Equal(t, map[string]int{"attempt-1": 1, "attempt-2": 1}, rbExecCounts(t, db, schema, "poison-1"))

	testenv.Worker(t, e, engine.WorkerConfig{})
	_, err = h.Result(ctx)
	var app *engine.ApplicationError
	require.ErrorAs(t, err, &app)
	require.Equal(t, engine.ActivityLostType, app.Type)
	require.Equal(t, map[string]int{"attempt-1": 1, "attempt-2": 1}, rbExecCounts(t, db, schema, "poison-1"),
		"no third attempt")
	hist, err := c.History(ctx, "poison-1")
	require.NoError(t, err)
	require.Len(t, hist[0].Steps, 1)
	require.Equal(t, "failed", hist[0].Steps[0].Status)
	require.Equal(t, 2, hist[0].Steps[0].Attempts)
}

// Defect 9: a worker process killed with SIGKILL while its run waits an
// hour for an activity's second attempt. The wait was recorded, so the
// worker that takes the run over does not start the retry policy or the
// wait again: it puts the run away until the recorded time (the hour's
// remainder, on the engine's clock), and when that time comes the attempt
// that runs is the second, with the first one's error in History.
func TestCrashDuringBackoffKeepsAttemptAndWait(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second
	e := testenv.Engine(t, &engine.Config{LeaseTTL: lease})
	schema, db, c := e.Schema(), e.DB(), e.Client()
	rbTables(t, db, schema)
	require.NoError(t, e.Register(rbProcessDefs(db, schema)...))
	// A long UnloadAfter keeps the run loaded in the child during its wait,
	// so the kill hits a live run.
	child := rbSpawn(t, schema, lease, time.Hour)
	child.WaitLine(t, rbHelperReady, rbReadyWithin)
	ctx := testenv.Ctx(t, 90*time.Second)
	h, err := c.StartByName(ctx, "proc.backoff", []byte(`{}`), &engine.StartOptions{ID: "backoff-1"})
	require.NoError(t, err)
	st := rbWaitStep(t, c, "backoff-1", "activity", "proc.flaky", "retrying")
	due := st.NextAttemptAt
	require.Greater(t, time.Until(due), 50*time.Minute)
	info, err := c.Describe(ctx, "backoff-1")
	require.NoError(t, err)
	require.Equal(t, engine.StatusRunning, info.Status, "the child holds the run during its wait")
	child.Kill(t)

	clock := engine.NewFakeClock(time.Now())
	e2 := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: lease, Clock: clock})
	require.NoError(t, e2.Register(rbProcessDefs(db, schema)...))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	// Taken over after the lease expires, and put away until the recorded
	// time: not an hour from now, and not at once.
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err = c.Describe(ctx, "backoff-1")
		return err == nil && info.Loads == 2 && info.Status == engine.StatusWaiting
	}, "the run was not taken over and put away")
	require.True(t, info.WakeAt.Equal(due), "due at the recorded time %v, got %v", due, info.WakeAt)
	require.Equal(t, map[string]int{"attempt-1": 1}, rbExecCounts(t, db, schema, "backoff-1"))

	clock.Advance(time.Hour)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `2`, string(out), "the attempt after the wait is the second")
	require.Equal(t, map[string]int{"attempt-1": 1, "attempt-2": 1}, rbExecCounts(t, db, schema, "backoff-1"))
	hist, err := c.History(ctx, "backoff-1")
	require.NoError(t, err)
	got := hist[0].Steps[0]
	require.Equal(t, 2, got.Attempts)
	require.Len(t, got.AttemptRecords, 2)
	require.ErrorContains(t, got.AttemptRecords[0].Error, "the provider is down")
	require.NoError(t, got.AttemptRecords[1].Error)
}
