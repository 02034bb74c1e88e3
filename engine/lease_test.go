package engine_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Tests of the lease: every write is fenced by the claim that made it, a
// worker learns within one renewal that it lost a run (and stops it), a
// loaded run notices an event whose notification was lost, expired leases
// are taken behind any backlog, and renewals never deadlock.

// lsWorker creates a worker whose background renewals call hook first (nil:
// none), starts it, and stops it at cleanup.
func lsWorker(t *testing.T, e *engine.Engine, cfg engine.WorkerConfig, hook func()) *engine.Worker {
	t.Helper()
	w, err := e.NewWorker(cfg)
	require.NoError(t, err)
	if hook != nil {
		engine.SetRenewHookForTest(w, hook)
	}
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w
}

// lsStall is a renewal hook that blocks while stalled.
type lsStall struct {
	stalled atomic.Bool
	release chan struct{}
}

func newLSStall() *lsStall { return &lsStall{release: make(chan struct{})} }

func (s *lsStall) hook() {
	if s.stalled.Load() {
		<-s.release
	}
}

// lsRecv receives from ch, failing the test if ctx ends first.
func lsRecv[T any](t *testing.T, ctx context.Context, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal("gave up waiting")
		panic("unreachable")
	}
}

// lsWaitExpired waits until the run's lease has expired in the database.
func lsWaitExpired(t *testing.T, e *engine.Engine, runID string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool {
		var expired bool
		err := e.DB().QueryRow(`SELECT GREATEST(lease_expires_at, claimed_until) < now() FROM `+fmt.Sprintf("%q", e.Schema())+`.runs WHERE run_id = $1`, runID).Scan(&expired)
		return err == nil && expired
	}, "the lease of %s never expired", runID)
}

// A worker whose lease expired while its copy of the run still ran, and
// whose run another process (here with the same worker ID, as a restarted
// process with a fixed ID would be) resumed, cannot write to the run any
// more: neither the step its activity finishes nor a child start made on
// the branch that step chose. The claim, not the worker's name, fences.
func TestStaleCopyOfRunCannotWrite(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	cfg := &engine.Config{Schema: schema, LeaseTTL: time.Second, UnloadAfter: time.Hour}
	childRan := &atomic.Int32{}
	defs := func(result string, started chan<- string, gate <-chan struct{}) []engine.Definition {
		act := engine.NewActivity("stale.act", func(ctx context.Context, _ int) (string, error) {
			started <- result
			<-gate
			return result, nil
		})
		child := engine.NewWorkflow("stale.child", func(ctx engine.Context, _ int) (int, error) {
			childRan.Add(1)
			return 1, nil
		})
		wf := engine.NewWorkflow("stale.wf", func(ctx engine.Context, _ int) (string, error) {
			v, err := act.Run(ctx, 0)
			if err != nil {
				return "", err
			}
			if v == "copy1" { // the branch only the stale copy takes
				if _, err := child.RunChild(ctx, 0, nil); err != nil {
					return "", err
				}
			}
			return v, nil
		})
		return []engine.Definition{act, child, wf}
	}
	started1, started2 := make(chan string, 4), make(chan string, 4)
	gate1, gate2 := make(chan struct{}), make(chan struct{})

	e1 := testenv.Engine(t, cfg)
	require.NoError(t, e1.Register(defs("copy1", started1, gate1)...))
	stall := newLSStall()
	w1 := lsWorker(t, e1, engine.WorkerConfig{ID: "same-id"}, stall.hook)
	ctx := testenv.Ctx(t, 60*time.Second)
	wf := defs("", nil, nil)[2].(*engine.Workflow[int, string])
	run, err := wf.Start(ctx, e1.Client(), 0, &engine.StartOptions{ID: "stale"})
	require.NoError(t, err)
	lsRecv(t, ctx, started1)
	stall.stalled.Store(true)
	lsWaitExpired(t, e1, run.RunID)

	e2 := testenv.Engine(t, cfg)
	require.NoError(t, e2.Register(defs("copy2", started2, gate2)...))
	lsWorker(t, e2, engine.WorkerConfig{ID: "same-id"}, nil)
	lsRecv(t, ctx, started2)

	close(gate1) // the stale copy finishes its activity and takes its branch
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w1) == 0 },
		"the stale copy never stopped")
	close(stall.release)
	close(gate2)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "copy2", out, "the step is the resumed copy's")
	require.NoError(t, e1.Close()) // whatever the stale copy queued is written or refused by now

	var children int
	require.NoError(t, e1.DB().QueryRow(`SELECT count(*) FROM `+fmt.Sprintf("%q", schema)+`.runs WHERE workflow_type = 'stale.child'`).Scan(&children))
	require.Zero(t, children, "the stale copy started no child")
	require.Zero(t, childRan.Load())
}

// A worker learns at its next renewal that another worker took its run,
// and stops its copy at once: the running activity's context is cancelled.
// The eager start's in-process result waiter does not outlive the copy.
func TestLostLeaseStopsRunAtOnce(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	cfg := &engine.Config{Schema: schema, LeaseTTL: time.Second, UnloadAfter: time.Hour}
	started, stopped := make(chan struct{}, 4), make(chan error, 4)
	act1 := engine.NewActivity("lost.act", func(ctx context.Context, _ int) (string, error) {
		started <- struct{}{}
		<-ctx.Done()
		stopped <- ctx.Err()
		return "", ctx.Err()
	})
	act2 := engine.NewActivity("lost.act", func(ctx context.Context, _ int) (string, error) { return "copy2", nil })
	wfOf := func(act *engine.Activity[int, string]) *engine.Workflow[int, string] {
		return engine.NewWorkflow("lost.wf", func(ctx engine.Context, _ int) (string, error) { return act.Run(ctx, 0) })
	}
	e1 := testenv.Engine(t, cfg)
	wf := wfOf(act1)
	require.NoError(t, e1.Register(act1, wf))
	stall := newLSStall()
	lsWorker(t, e1, engine.WorkerConfig{ID: "first"}, stall.hook)
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := wf.Start(ctx, e1.Client(), 0, &engine.StartOptions{ID: "lost"})
	require.NoError(t, err)
	lsRecv(t, ctx, started)
	require.Equal(t, 1, engine.WaiterCountForTest(e1), "the eager start waits for the result in process")
	stall.stalled.Store(true)
	lsWaitExpired(t, e1, run.RunID)

	e2 := testenv.Engine(t, cfg)
	require.NoError(t, e2.Register(act2, wfOf(act2)))
	lsWorker(t, e2, engine.WorkerConfig{ID: "second"}, nil)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "copy2", out)

	close(stall.release) // the first worker's next renewal finds the run taken
	select {
	case err := <-stopped:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the first worker's copy kept running after its lease was taken")
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.WaiterCountForTest(e1) == 0 },
		"the eager start's result waiter leaked")
}

// A cancellation whose notification never reached the worker (its LISTEN
// connection was down, or the notice was lost) still reaches a loaded run
// within one lease renewal: the run's activity is cancelled and the run
// ends cancelled instead of running all its activities.
func TestMissedCancelReachesLoadedRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		killListener bool
	}{
		{"notice never sent", false},
		{"listener killed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			schema := testenv.Schema(t)
			cfg := &engine.Config{Schema: schema, LeaseTTL: time.Second, UnloadAfter: time.Hour}
			var ran atomic.Int32
			started := make(chan struct{}, 20)
			act := engine.NewActivity("missed.step", func(ctx context.Context, _ int) (int, error) {
				ran.Add(1)
				started <- struct{}{}
				<-ctx.Done()
				return 0, ctx.Err()
			})
			wf := engine.NewWorkflow("missed.wf", func(ctx engine.Context, n int) (int, error) {
				for i := 0; i < n; i++ {
					if _, err := act.Run(ctx, i); err != nil {
						return i, err
					}
				}
				return n, nil
			})
			e := testenv.Engine(t, cfg)
			require.NoError(t, e.Register(act, wf))
			testenv.Worker(t, e, engine.WorkerConfig{})
			ctx := testenv.Ctx(t, 60*time.Second)
			run, err := wf.Start(ctx, e.Client(), 20, &engine.StartOptions{ID: "missed"})
			require.NoError(t, err)
			lsRecv(t, ctx, started)

			q := fmt.Sprintf("%q", schema)
			if tc.killListener {
				other := testenv.Engine(t, &engine.Config{Schema: schema})
				chans := engine.ListenChannelsForTest(e)
				var killed int
				require.NoError(t, e.DB().QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%' AND (query LIKE '%'||$1||'%' OR query LIKE '%'||$2||'%' OR query LIKE '%'||$3||'%')`,
					chans[0], chans[1], chans[2]).Scan(&killed))
				require.Positive(t, killed, "found the LISTEN connections")
				require.NoError(t, other.Client().Cancel(ctx, "missed", "customer asked"))
			} else {
				// What Client.Cancel writes, without the notification.
				_, err := e.DB().Exec(`UPDATE `+q+`.runs SET cancel_requested_at = now(), cancel_reason = 'customer asked',
					event_seq = event_seq + 1 WHERE run_id = $1`, run.RunID)
				require.NoError(t, err)
			}
			info := rbWaitStatus(t, e.Client(), "missed", engine.StatusCancelled)
			require.True(t, info.CancelRequested)
			require.Equal(t, int32(1), ran.Load(), "no activity ran after the cancellation")
		})
	}
}

// Runs whose lease expired (their worker crashed) are taken within a bound
// even behind a backlog of due runs that fills every claim.
func TestExpiredLeaseTakenBehindBacklog(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow("backlog.wf", func(ctx engine.Context, _ int) (int, error) { return 1, nil })
	e := testenv.Engine(t, &engine.Config{Schema: schema})
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, 120*time.Second)
	c := e.Client()
	crashed, err := wf.Start(ctx, c, 0, &engine.StartOptions{ID: "crashed"})
	require.NoError(t, err)
	q := fmt.Sprintf("%q", schema)
	_, err = e.DB().Exec(`UPDATE `+q+`.runs SET status = 'running', lease_owner = 'dead-worker', loads = 1,
		lease_expires_at = now() - interval '1 minute' WHERE run_id = $1`, crashed.RunID)
	require.NoError(t, err)
	const backlog = 300
	_, err = e.DB().Exec(`INSERT INTO `+q+`.runs (run_id, workflow_id, workflow_type, queue, status, input, wake_at)
		SELECT 'backlog-' || i, 'backlog-' || i, 'backlog.wf', 'default', 'pending', '0', now() - interval '1 hour'
		FROM generate_series(1, $1) i`, backlog)
	require.NoError(t, err)

	lsWorker(t, e, engine.WorkerConfig{MaxWorkflows: 1, ClaimBatch: 1}, nil)
	_, err = crashed.Result(ctx)
	require.NoError(t, err)
	var open int
	require.NoError(t, e.DB().QueryRow(`SELECT count(*) FROM `+q+`.runs WHERE workflow_id LIKE 'backlog-%'
		AND status IN ('pending','running','waiting')`).Scan(&open))
	require.Positive(t, open, "the crashed worker's run waited for the whole backlog to drain")
}

// A renewal that meets a row locked by another transaction, which then
// wants a row the renewal holds, must not deadlock: renewals never wait on
// row locks.
func TestRenewalNeverDeadlocks(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow("renewlock.wf", func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	e := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: time.Minute, UnloadAfter: time.Hour})
	require.NoError(t, e.Register(wf))
	w := lsWorker(t, e, engine.WorkerConfig{}, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	var ids []string
	for i := 0; i < 2; i++ {
		run, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: fmt.Sprintf("renewlock-%d", i)})
		require.NoError(t, err)
		ids = append(ids, run.RunID)
	}
	sort.Strings(ids)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == 2 }, "both runs loaded")

	q := fmt.Sprintf("%q", schema)
	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`UPDATE `+q+`.runs SET updated_at = updated_at WHERE run_id = $1`, ids[1])
	require.NoError(t, err)

	renewed := make(chan error, 1)
	go func() { renewed <- engine.RenewForTest(w) }()
	var renewErr error
	done := false
	testenv.Eventually(t, 20*time.Second, func() bool {
		select {
		case renewErr = <-renewed:
			done = true
			return true
		default:
		}
		var waiting int
		err := e.DB().QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE '%lease_expires_at%' AND query LIKE '%'||$1||'%'`, schema).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the renewal neither finished nor waited on the locked row")
	// Take the row the renewal (if it waits) holds: with locks taken in
	// opposite orders one of the two would fail with "deadlock detected".
	_, err = tx.Exec(`UPDATE `+q+`.runs SET updated_at = updated_at WHERE run_id = $1`, ids[0])
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	if !done {
		renewErr = <-renewed
	}
	require.NoError(t, renewErr)
}

// A reset while the child of the old run is loaded hands the child to the
// new run: the child's result completes the new run's step.
func TestResetWhileChildLoaded(t *testing.T) {
	t.Parallel()
	child := engine.NewWorkflow("resetchild.child", func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	parent := engine.NewWorkflow("resetchild.parent", func(ctx engine.Context, _ int) (string, error) {
		return child.RunChild(ctx, 0, &engine.ChildOptions{ID: "resetchild-kid"})
	})
	e := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour})
	require.NoError(t, e.Register(child, parent))
	w := lsWorker(t, e, engine.WorkerConfig{}, nil)
	c := e.Client()
	ctx := testenv.Ctx(t, 60*time.Second)
	_, err := parent.Start(ctx, c, 0, &engine.StartOptions{ID: "resetchild"})
	require.NoError(t, err)
	rbWaitStatus(t, c, "resetchild-kid", engine.StatusRunning)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == 2 }, "parent and child loaded")

	h, err := c.Reset(ctx, "resetchild", engine.ResetOptions{BeforeSeq: 2}) // keeps the child step
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "resetchild-kid", "go", "done"))
	out, err := (&engine.Run[string]{RunHandle: *h}).Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "done", out)
}

// A worker of several queues claims the due runs of all of them, oldest
// first across queues (each queue is read from its own index).
func TestClaimAcrossQueuesOldestFirst(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []int
	wf := engine.NewWorkflow("queues.wf", func(ctx engine.Context, i int) (int, error) {
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
		return i, nil
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, 60*time.Second)
	var runs []*engine.Run[int]
	for i := 0; i < 6; i++ {
		run, err := wf.Start(ctx, e.Client(), i, &engine.StartOptions{Queue: []string{"qa", "qb", "qc"}[i%3]})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	lsWorker(t, e, engine.WorkerConfig{Queues: []string{"qb", "qa", "qb"}, MaxWorkflows: 1, ClaimBatch: 1}, nil)
	lsWorker(t, e, engine.WorkerConfig{Queues: []string{"qc"}, MaxWorkflows: 1, ClaimBatch: 1}, nil)
	for _, r := range runs {
		_, err := r.Result(ctx)
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	var ab, c []int
	for _, i := range order {
		if i%3 == 2 {
			c = append(c, i)
		} else {
			ab = append(ab, i)
		}
	}
	require.Equal(t, []int{0, 1, 3, 4}, ab, "qa and qb runs in the order they became due")
	require.Equal(t, []int{2, 5}, c)
}
