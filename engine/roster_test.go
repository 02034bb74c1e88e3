package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// rosterNames records the workers the work notices of a client's process
// name.
type rosterNames struct {
	mu    sync.Mutex
	names []string
}

func (r *rosterNames) add(_, worker string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, worker)
}

func (r *rosterNames) named(worker string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.names {
		if w == worker {
			n++
		}
	}
	return n
}

// rosterClient is a client in a process of its own (no worker here to take
// its starts eagerly), whose notices the returned record learns of.
func rosterClient(t *testing.T, e *engine.Engine, defs ...engine.Definition) (*engine.Client, *rosterNames) {
	t.Helper()
	c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: testenv.DatabaseURL(), DB: e.DB(), Schema: e.Schema(), Workflows: defs})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	names := &rosterNames{}
	engine.SetWorkNoticeHookForTest(c, names.add)
	return c, names
}

// rosterHold is a workflow whose activity holds its run (and its worker
// slot) until release is closed.
type rosterHold struct {
	hold    *engine.Activity[struct{}, struct{}]
	block   *engine.Workflow[struct{}, struct{}]
	held    chan struct{}
	release chan struct{}
}

// newRosterHold defines prefix.hold and prefix.block, for up to n runs.
func newRosterHold(prefix string, n int) *rosterHold {
	h := &rosterHold{held: make(chan struct{}, n), release: make(chan struct{})}
	h.hold = engine.NewActivity(prefix+".hold", func(ctx context.Context, _ struct{}) (struct{}, error) {
		h.held <- struct{}{}
		select {
		case <-h.release:
		case <-ctx.Done():
		}
		return struct{}{}, nil
	})
	h.block = engine.NewWorkflow(prefix+".block", func(ctx engine.Context, _ struct{}) (struct{}, error) {
		return h.hold.Run(ctx, struct{}{})
	})
	return h
}

// started waits until n runs hold.
func (h *rosterHold) started(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-h.held:
		case <-ctx.Done():
			t.Fatal("the holding workflows did not all start")
		}
	}
}

// A worker process killed with SIGKILL keeps its roster row until it
// expires, and the notices of new runs go on naming it in turn with the
// live worker. The runs they announce are still run, by the live worker at
// its next poll: the workflows here start one at a time, each after the
// one before ended, so no notice to the live worker comes after a run sent
// to the dead one and could take it along.
func TestRunsAnnouncedToAKilledWorkerRunElsewhere(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, &engine.Config{PollInterval: 100 * time.Millisecond})
	schema, db := e.Schema(), e.DB()
	rbTables(t, db, schema)
	defs := rbProcessDefs(db, schema)
	require.NoError(t, e.Register(defs...))
	dead := rbSpawn(t, schema, 15*time.Second, time.Hour)
	dead.WaitLine(t, rbHelperReady, rbReadyWithin)
	var deadID string
	require.NoError(t, db.QueryRow(`SELECT worker_id FROM `+pq.QuoteIdentifier(schema)+`.workers`).Scan(&deadID))
	dead.Kill(t)
	testenv.Worker(t, e, engine.WorkerConfig{})
	c, names := rosterClient(t, e, defs...)

	ctx := testenv.Ctx(t, 60*time.Second)
	for i := range 4 {
		run, err := c.StartByName(ctx, "proc.fleet", []byte(fmt.Sprint(i)), &engine.StartOptions{ID: fmt.Sprintf("roster-dead-%d", i)})
		require.NoError(t, err)
		out, err := run.Result(ctx)
		require.NoError(t, err, "workflow %d, announced to the killed worker or not, did not run", i)
		require.JSONEq(t, fmt.Sprintf(`"%d:first-done,final-done"`, i), string(out))
	}
	require.Positive(t, names.named(deadID), "no start was announced to the killed worker %s: %q", deadID, names.names)
}

// A worker whose every slot is taken hands on the notices that name it, so
// another worker takes their runs before its own poll (a minute here).
func TestRunsAnnouncedToAFullWorkerRunElsewhere(t *testing.T) {
	t.Parallel()
	h := newRosterHold("roster", 1)
	defer close(h.release) // before the workers stop
	echo := engine.NewWorkflow("roster.echo", func(ctx engine.Context, in int) (int, error) { return in, nil })
	e := testenv.Engine(t, &engine.Config{PollInterval: time.Minute})
	require.NoError(t, e.Register(h.hold, h.block, echo))
	c, names := rosterClient(t, e)
	ctx := testenv.Ctx(t, 30*time.Second) // within the poll

	full := testenv.Worker(t, e, engine.WorkerConfig{MaxWorkflows: 1})
	_, err := h.block.Start(ctx, c, struct{}{}, nil)
	require.NoError(t, err)
	h.started(ctx, t, 1) // its one slot is taken
	testenv.Worker(t, e, engine.WorkerConfig{})

	for i := range 4 {
		run, err := echo.Start(ctx, c, i, nil)
		require.NoError(t, err)
		got, err := run.Result(ctx)
		require.NoError(t, err, "workflow %d, announced to the full worker or not, did not run", i)
		require.Equal(t, i, got)
	}
	require.Positive(t, names.named(full.ID()), "no start was announced to the full worker: %q", names.names)
}

// A worker with fewer runs loaded than one commit shard takes writes them
// all through the first shard: with two shards each, four worker processes
// of a quarter of the load made twice the commits of one, each half as
// large. Its runs leave their pins when they end.
func TestFewLoadedRunsShareOneCommitShard(t *testing.T) {
	t.Parallel()
	h := newRosterHold("pin", 20)
	e := testenv.Engine(t, &engine.Config{CommitShards: 2})
	require.NoError(t, e.Register(h.hold, h.block))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	var runs []*engine.Run[struct{}]
	for range 20 {
		run, err := h.block.Start(ctx, e.Client(), struct{}{}, nil)
		require.NoError(t, err)
		runs = append(runs, run)
	}
	h.started(ctx, t, 20)
	require.Equal(t, []int64{20, 0}, engine.PinnedRunsForTest(e))
	close(h.release)
	for _, run := range runs {
		_, err := run.Result(ctx)
		require.NoError(t, err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		p := engine.PinnedRunsForTest(e)
		return p[0] == 0 && p[1] == 0
	}, "pins left after the runs ended: %v", engine.PinnedRunsForTest(e))
}

// A process whose Result calls never wait on the database (a worker's)
// does not read the closes announced for a client's waiters elsewhere; the
// client does.
func TestWorkerProcessReadsNoCloseNotices(t *testing.T) {
	t.Parallel()
	echo := engine.NewWorkflow("quiet.echo", func(ctx engine.Context, in int) (int, error) { return in, nil })
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(echo))
	var workerRead, clientRead atomic.Int64
	engine.SetDoneNoticeHookForTest(e, func() { workerRead.Add(1) })
	testenv.Worker(t, e, engine.WorkerConfig{})
	c, _ := rosterClient(t, e)
	engine.SetDoneNoticeHookForTest(engine.ClientEngineForTest(c), func() { clientRead.Add(1) })
	ctx := testenv.Ctx(t, 60*time.Second)
	for i := range 5 {
		run, err := echo.Start(ctx, c, i, nil)
		require.NoError(t, err)
		got, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, i, got)
	}
	require.Positive(t, clientRead.Load(), "the client read no close notice")
	require.Zero(t, workerRead.Load(), "the worker's process read close notices")
}
