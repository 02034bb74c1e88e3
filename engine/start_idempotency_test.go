package engine_test

import (
	"context"
	"errors"
	"github.com/lib/pq"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// rbGateWorkflow waits for a "go" signal, then returns its input, or fails
// when the input is "fail".
func rbGateWorkflow(name string) *engine.Workflow[string, string] {
	return engine.NewWorkflow(name, func(ctx engine.Context, in string) (string, error) {
		if _, err := engine.GetSignalChannel[struct{}](ctx, "go").Receive(ctx); err != nil {
			return "", err
		}
		if in == "fail" {
			return "", engine.NewNonRetryableError("Failed", "asked to fail", nil)
		}
		return in, nil
	})
}

// rbFinish lets the open run of id finish and waits for its status.
func rbFinish(t *testing.T, c *engine.Client, id string, status engine.Status) {
	t.Helper()
	require.NoError(t, c.Signal(context.Background(), id, "go", struct{}{}))
	rbWaitStatus(t, c, id, status)
}

// While a run is open, a second start with its ID is refused
// (ConflictFail, the default) or returns the open run (ConflictUseExisting);
// neither creates a run.
func TestStartConflictPolicies(t *testing.T) {
	t.Parallel()
	wf := rbGateWorkflow("idem.conflict")
	_, c := rbEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	first, err := wf.Start(ctx, c, "first", &engine.StartOptions{ID: "op-1"})
	require.NoError(t, err)

	_, err = wf.Start(ctx, c, "second", &engine.StartOptions{ID: "op-1"})
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	require.Contains(t, err.Error(), "op-1")
	_, err = wf.Start(ctx, c, "second", &engine.StartOptions{ID: "op-1", ConflictPolicy: engine.ConflictFail})
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	_, err = c.StartByName(ctx, "idem.conflict", []byte(`"third"`), &engine.StartOptions{ID: "op-1"})
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)

	again, err := wf.Start(ctx, c, "second", &engine.StartOptions{ID: "op-1", ConflictPolicy: engine.ConflictUseExisting})
	require.NoError(t, err)
	require.Equal(t, first.RunID, again.RunID)
	require.Equal(t, "op-1", again.WorkflowID)

	runs, err := c.List(ctx, engine.ListFilter{})
	require.NoError(t, err)
	require.Len(t, runs, 1)

	rbFinish(t, c, "op-1", engine.StatusCompleted)
	out, err := again.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "first", out, "the handle from ConflictUseExisting is the first run's")
}

// Once earlier runs are closed, the ID reuse policy decides: allow (the
// default) starts a new run, reject never does, failed-only does only when
// no earlier run completed.
func TestStartIDReusePolicies(t *testing.T) {
	t.Parallel()
	wf := rbGateWorkflow("idem.reuse")
	e, c := rbEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	start := func(id, in string, p engine.IDReusePolicy) (*engine.Run[string], error) {
		return wf.Start(ctx, c, in, &engine.StartOptions{ID: id, IDReusePolicy: p})
	}
	countRuns := func(id string) int {
		h, err := c.History(ctx, id)
		require.NoError(t, err)
		return len(h)
	}

	// completed
	_, err := start("done", "x", "")
	require.NoError(t, err)
	rbFinish(t, c, "done", engine.StatusCompleted)
	_, err = start("done", "x", engine.ReuseRejectDuplicate)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	_, err = start("done", "x", engine.ReuseAllowDuplicateFailedOnly)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	require.Equal(t, 1, countRuns("done"))
	second, err := start("done", "y", engine.ReuseAllowDuplicate)
	require.NoError(t, err)
	require.Equal(t, 2, countRuns("done"))
	// The first run is superseded by the second in the start's own write
	// (the operations list reads "latest run" from that column).
	var superseded []bool
	require.NoError(t, testenv.DB(t).SelectContext(ctx, &superseded, `SELECT superseded FROM `+
		pq.QuoteIdentifier(e.Schema())+`.runs WHERE workflow_id = 'done' ORDER BY created_at, run_id`))
	require.Equal(t, []bool{true, false}, superseded)
	rbFinish(t, c, "done", engine.StatusCompleted)
	out, err := second.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "y", out)

	// failed
	_, err = start("failed", "fail", "")
	require.NoError(t, err)
	rbFinish(t, c, "failed", engine.StatusFailed)
	_, err = start("failed", "x", engine.ReuseRejectDuplicate)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	retry, err := start("failed", "x", engine.ReuseAllowDuplicateFailedOnly)
	require.NoError(t, err)
	rbFinish(t, c, "failed", engine.StatusCompleted)
	out, err = retry.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "x", out)
	require.Equal(t, 2, countRuns("failed"))
	_, err = start("failed", "z", engine.ReuseAllowDuplicateFailedOnly)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted, "a run of the ID completed")

	// reject also refuses while the first run is still open
	_, err = start("open", "x", engine.ReuseRejectDuplicate)
	require.NoError(t, err)
	_, err = start("open", "x", engine.ReuseRejectDuplicate)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	require.Equal(t, 1, countRuns("open"))
}

// Twenty goroutines start one ID at once: exactly one run is created. With
// ConflictFail one start wins and the others get ErrAlreadyStarted; with
// ConflictUseExisting all get the same run. Refused eager starts give back
// the worker slot they reserved.
func TestStartConcurrentSameID(t *testing.T) {
	t.Parallel()
	for _, policy := range []engine.ConflictPolicy{engine.ConflictFail, engine.ConflictUseExisting} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			wf := rbGateWorkflow("idem.race")
			e := testenv.Engine(t, nil)
			require.NoError(t, e.Register(wf))
			// Two slots: a leaked slot would leave the later starts unrun.
			testenv.Worker(t, e, engine.WorkerConfig{MaxWorkflows: 2})
			c := e.Client()
			ctx := testenv.Ctx(t, 30*time.Second)

			const n = 20
			var wg sync.WaitGroup
			gate := make(chan struct{})
			runIDs := make([]string, n)
			errs := make([]error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					run, err := wf.Start(ctx, c, "race", &engine.StartOptions{ID: "same", ConflictPolicy: policy})
					errs[i] = err
					if err == nil {
						runIDs[i] = run.RunID
					}
				}()
			}
			close(gate)
			wg.Wait()

			won := map[string]bool{}
			refused := 0
			for i := range errs {
				switch {
				case errs[i] == nil:
					won[runIDs[i]] = true
				case errors.Is(errs[i], engine.ErrAlreadyStarted):
					refused++
				default:
					t.Fatalf("start %d: unexpected error %v", i, errs[i])
				}
			}
			require.Len(t, won, 1, "all successful starts share one run")
			if policy == engine.ConflictFail {
				require.Equal(t, n-1, refused)
			} else {
				require.Zero(t, refused)
			}
			runs, err := c.List(ctx, engine.ListFilter{WorkflowType: "idem.race"})
			require.NoError(t, err)
			require.Len(t, runs, 1)
			for id := range won {
				require.Equal(t, id, runs[0].RunID)
			}
			// Refused eager starts left no result waiter behind (the winner's
			// own may remain while its run is open).
			require.LessOrEqual(t, engine.WaiterCountForTest(e), 1)

			// The worker still has its two slots.
			rbFinish(t, c, "same", engine.StatusCompleted)
			var more []*engine.Run[string]
			for _, id := range []string{"after-1", "after-2"} {
				r, err := wf.Start(ctx, c, id, &engine.StartOptions{ID: id})
				require.NoError(t, err)
				more = append(more, r)
				require.NoError(t, c.Signal(ctx, id, "go", struct{}{}))
			}
			for i, r := range more {
				out, err := r.Result(ctx)
				require.NoError(t, err)
				require.Equal(t, []string{"after-1", "after-2"}[i], out)
			}
		})
	}
}

// Result may be called again, and from several goroutines, on a handle of a
// run this process executes: every call gets the outcome from the first
// one's in-process hand-off, none waits for a poll (here 10 s apart, longer
// than the test's deadline allows).
func TestResultTwiceOnLocalHandle(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, &engine.Config{PollInterval: 10 * time.Second})
	wf := engine.NewWorkflow("twice", func(ctx engine.Context, n int) (int, error) { return n + 1, nil })
	require.NoError(t, e.Register(wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 8*time.Second)
	run, err := wf.Start(ctx, e.Client(), 41, nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			out, err := run.Result(ctx)
			assert.NoError(t, err)
			assert.Equal(t, 42, out)
		})
	}
	wg.Wait()
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, out)
}

// An eager start's run executes up to its first activity before its insert
// commits, and the insert rides in the commit of that activity's start. A
// start refused because the ID is taken must then run nothing: the
// activity of the refused copy never runs, and the open run is untouched.
func TestRefusedEagerStartRunsNoActivity(t *testing.T) {
	t.Parallel()
	var calls rbAttempts
	release := make(chan struct{})
	act := engine.NewActivity("idem.first", func(ctx context.Context, in string) (string, error) {
		calls.add(in)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return in, nil
	})
	wf := engine.NewWorkflow("idem.first.wf", func(ctx engine.Context, in string) (string, error) {
		return act.Run(ctx, in)
	})
	_, c := rbEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	first, err := wf.Start(ctx, c, "first", &engine.StartOptions{ID: "taken"})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool { return calls.count("first") == 1 }, "the first run's activity never ran")
	for i := 0; i < 5; i++ {
		_, err = wf.Start(ctx, c, "second", &engine.StartOptions{ID: "taken"})
		require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	}
	close(release)
	out, err := first.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "first", out)
	require.Equal(t, 0, calls.count("second"), "a refused start ran its activity")
	require.Equal(t, 1, calls.count("first"))
}
