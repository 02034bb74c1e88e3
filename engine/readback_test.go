package engine_test

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A batch that PostgreSQL's restart cut short (nothing of it committed) is
// read back, and written again when none of it is there. A record it holds
// may match one already in the database: a run snoozed a second time by a
// rate limiter writes the same step status with the same attempt count
// (a snooze is no attempt), and a woken run that unloads again before its
// worker marks it running finds its row already waiting. Taken for proof
// that the batch committed, such a record made the read-back tell the
// batch's other writes that they were fenced out: an activity start of a
// live run was refused ("activity start refused; dropping run ... lease
// lost", as in chaos runs around a Redis and a PostgreSQL restart) and the
// run dropped, and the snoozed run's unload was taken for written.
//
// The batch is staged: a third run's write holds the only commit shard
// while run A (its second snooze, then its unload) and run B (an activity
// start) queue behind it; the server is stopped just before their batch
// is written and started once the read-back has met it down.
func TestReadBackOfUncommittedBatchRefusesNoWrite(t *testing.T) {
	t.Parallel()
	pg, db := dfPrivatePool(t)
	logs := &dfLog{}
	logs.dumpIfFailed(t)

	gates := map[string]chan struct{}{"b": make(chan struct{}), "c": make(chan struct{})}
	var gated ftCounter
	gate := engine.NewActivity("rbk.gate", func(ctx context.Context, name string) (int, error) {
		gated.inc(name)
		<-gates[name]
		return 1, nil
	})
	after := engine.NewActivity("rbk.after", func(ctx context.Context, _ int) (int, error) { return 2, nil })
	limited := engine.NewActivity("rbk.limited", func(ctx context.Context, _ int) (int, error) { return 3, nil })
	held, release := make(chan struct{}), make(chan struct{})
	target, stopped := make(chan struct{}), make(chan struct{})
	var phase atomic.Int32 // 1: hold the next batch; 2: stop the server before the next
	var snoozes atomic.Int32
	var bStarting atomic.Bool
	limiter := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
		switch in.Info.ActivityName {
		case "rbk.after":
			bStarting.Store(true)
		case "rbk.limited":
			switch snoozes.Add(1) {
			case 1:
				return nil, engine.Snooze(2*time.Second, "provider: recovering limit")
			case 2:
				// C's end takes the shard and is held there; B's next
				// activity start and this snooze's writes queue behind.
				phase.Store(1)
				close(gates["c"])
				<-held
				close(gates["b"])
				return nil, engine.Snooze(2*time.Second, "provider: recovering limit")
			}
		}
		return next(ctx, in)
	})
	wfB := engine.NewWorkflow("rbk.b", func(ctx engine.Context, _ int) (int, error) {
		if _, err := gate.Run(ctx, "b"); err != nil {
			return 0, err
		}
		return after.Run(ctx, 0)
	})
	wfC := engine.NewWorkflow("rbk.c", func(ctx engine.Context, _ int) (int, error) { return gate.Run(ctx, "c") })
	wfA := engine.NewWorkflow("rbk.a", func(ctx engine.Context, _ int) (int, error) { return limited.Run(ctx, 0) })

	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: pg.URL, Schema: "graft", Logger: slog.New(logs),
		CommitShards: 1, UnloadAfter: time.Second, Interceptors: []engine.Interceptor{limiter}})
	require.NoError(t, e.Register(gate, after, limited, wfA, wfB, wfC))
	engine.SetBeforeCommitForTest(e, func() {
		switch phase.Load() {
		case 1:
			phase.Store(2)
			held <- struct{}{}
			<-release
		case 2:
			phase.Store(3)
			target <- struct{}{}
			<-stopped
		}
	})
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 120*time.Second)

	runB, err := wfB.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: "b"})
	require.NoError(t, err)
	runC, err := wfC.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: "c"})
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, func() bool { return gated.get("b") == 1 && gated.get("c") == 1 },
		"B and C never reached their gates")
	runA, err := wfA.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: "a"})
	require.NoError(t, err)

	// Queued behind C's held end: A's snooze record and unload, and B's
	// activity start.
	testenv.Eventually(t, 60*time.Second, func() bool {
		q := engine.QueuedWritesForTest(e)
		aSnooze := slices.ContainsFunc(q, func(w engine.QueuedWriteForTest) bool {
			return w.RunID == runA.RunID && slices.Contains(w.Steps, "throttled")
		})
		aUnload := slices.ContainsFunc(q, func(w engine.QueuedWriteForTest) bool {
			return w.RunID == runA.RunID && w.Fin == engine.StatusWaiting
		})
		bStart := slices.ContainsFunc(q, func(w engine.QueuedWriteForTest) bool {
			return w.RunID == runB.RunID && slices.Contains(w.Steps, "started")
		})
		return bStarting.Load() && aSnooze && aUnload && bStart
	}, "the writes never queued behind C's end")
	close(release)
	<-target
	pg.Stop(t)
	close(stopped)
	testenv.Eventually(t, 30*time.Second, func() bool { return logs.count("engine: commit outcome unknown") > 0 },
		"the batch was never read back")
	pg.Start(t)

	for _, run := range []*engine.Run[int]{runA, runB, runC} {
		_, err := run.Result(ctx)
		require.NoError(t, err)
	}
	require.Zero(t, logs.count("engine: activity start refused"), "an activity start was refused")
	require.Zero(t, logs.count("engine: step write refused"), "a write was refused")
	info, err := e.Client().Describe(ctx, "b")
	require.NoError(t, err)
	require.Equal(t, 1, info.Loads, "B was dropped and resumed")
	info, err = e.Client().Describe(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, 3, info.Loads, "A loaded once per snooze and once to end")
}
