package engine_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
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

func (r *rosterNames) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.names)
}

// since returns the names from the i-th on.
func (r *rosterNames) since(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.names[min(i, len(r.names)):])
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

// rosterDoomed is an engine with the process-test definitions and no
// worker, polling every poll, and a worker subprocess (leases of 15 s) on
// its schema, ready to be killed, and the subprocess's worker ID.
func rosterDoomed(t *testing.T, poll time.Duration) (*engine.Engine, *testenv.Proc, string) {
	t.Helper()
	e := testenv.Engine(t, &engine.Config{PollInterval: poll})
	schema, db := e.Schema(), e.DB()
	rbTables(t, db, schema)
	require.NoError(t, e.Register(rbDefs(e)...))
	dead := rbSpawn(t, schema, engine.DefaultLeaseTTL, time.Hour)
	dead.WaitLine(t, rbHelperReady, rbReadyWithin)
	var deadID string
	require.NoError(t, db.QueryRow(`SELECT worker_id FROM `+pq.QuoteIdentifier(schema)+`.workers`).Scan(&deadID))
	return e, dead, deadID
}

// rbDefs is rbProcessDefs on e's database and schema.
func rbDefs(e *engine.Engine) []engine.Definition { return rbProcessDefs(e.DB(), e.Schema()) }

// A worker process killed with SIGKILL keeps its roster row until it
// expires, and the notices of new runs go on naming it in turn with the
// live worker. The runs they announce are still run, by the live worker at
// its next poll: the workflows here start one at a time, each after the
// one before ended, so no notice to the live worker comes after a run sent
// to the dead one and could take it along.
func TestRunsAnnouncedToAKilledWorkerRunElsewhere(t *testing.T) {
	t.Parallel()
	e, dead, deadID := rosterDoomed(t, 100*time.Millisecond)
	dead.Kill(t)
	testenv.Worker(t, e, engine.WorkerConfig{})
	c, names := rosterClient(t, e, rbDefs(e)...)

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

// A worker process killed with SIGKILL is no longer named in the notices
// of new runs once its roster row has gone unrenewed for more than one
// renewal interval and some slack (and the client's copy of the roster was
// read again since), though the row's expiry may be further off: its runs
// would wait for another worker's poll (PollInterval) instead of being
// claimed at once. The time passing is the database's, from the row's last
// renewal (its expiry less the roster's TTL).
func TestKilledWorkerIsNotNamedPastItsRenewal(t *testing.T) {
	t.Parallel()
	e, dead, deadID := rosterDoomed(t, 100*time.Millisecond)
	dead.Kill(t)
	testenv.Worker(t, e, engine.WorkerConfig{})
	c, names := rosterClient(t, e, rbDefs(e)...)
	ctx := testenv.Ctx(t, 60*time.Second)

	// A row renewed more than a renewal interval and the slack ago
	// (roster.go's rosterSlack) is not named, once every copy of the
	// roster was read again (rosterRead; with a margin).
	const slack = 2 * time.Second
	ttl, beat, read := engine.RosterTimesForTest()
	past := fmt.Sprintf("%d milliseconds", (beat + slack + read + 500*time.Millisecond - ttl).Milliseconds())
	testenv.Eventually(t, 30*time.Second, func() bool {
		var aged bool
		err := e.DB().QueryRow(`SELECT expires_at + $2::interval < now() FROM `+pq.QuoteIdentifier(e.Schema())+`.workers WHERE worker_id = $1`,
			deadID, past).Scan(&aged)
		return err == sql.ErrNoRows || (err == nil && aged)
	}, "the killed worker's roster row never aged")
	from := names.count()
	for i := range 4 {
		run, err := c.StartByName(ctx, "proc.fleet", []byte(fmt.Sprint(i)), &engine.StartOptions{ID: fmt.Sprintf("roster-aged-%d", i)})
		require.NoError(t, err)
		_, err = run.Result(ctx)
		require.NoError(t, err)
	}
	require.NotContains(t, names.since(from), deadID, "a notice named the killed worker after its renewals stopped")
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

// A process shares the commits PostgreSQL takes in parallel with the other
// live workers of the roster: with one more live (in a queue of its own
// here, so no notice names it), a process writes twice shardRuns loaded
// runs through one shard, where alone it spreads them over both. With two
// shards each past 64 runs, bench -workers 4 -c 512 made 0.20 group
// commits per workflow against 0.10 with one worker process.
func TestLoadedRunsShareOneCommitShardPerLiveWorker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		others int
		spread bool
	}{
		{"alone", 0, true},
		{"with another worker", 1, false},
		// Past four live workers the count stops growing: a process
		// with most of the load among idle ones still spreads it.
		{"with five others", 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := 100 // past shardRuns (64), within twice it
			if tc.others >= 4 {
				n = 4*64 + 20 // past the bound on the workers counted
			}
			h := newRosterHold("share", n)
			e := testenv.Engine(t, &engine.Config{CommitShards: 2})
			require.NoError(t, e.Register(h.hold, h.block))
			for i := range tc.others {
				_, err := e.DB().Exec(`INSERT INTO `+pq.QuoteIdentifier(e.Schema())+`.workers (worker_id, queues, types, expires_at)
					VALUES ($1, '{elsewhere}', '{}', now() + interval '1 hour')`, fmt.Sprintf("other-%d", i))
				require.NoError(t, err)
			}
			testenv.Worker(t, e, engine.WorkerConfig{MaxWorkflows: 2 * n, MaxActivities: 2 * n})
			testenv.Eventually(t, 30*time.Second, func() bool { return engine.LiveWorkersForTest(e) == int64(1+tc.others) },
				"live workers read: %d", engine.LiveWorkersForTest(e))
			ctx := testenv.Ctx(t, 60*time.Second)
			var runs []*engine.Run[struct{}]
			for range n {
				run, err := h.block.Start(ctx, e.Client(), struct{}{}, nil)
				require.NoError(t, err)
				runs = append(runs, run)
			}
			h.started(ctx, t, n)
			pins := engine.PinnedRunsForTest(e)
			close(h.release)
			for _, run := range runs {
				_, err := run.Result(ctx)
				require.NoError(t, err)
			}
			if tc.spread {
				require.Positive(t, pins[1], "%d loaded runs on one shard with %d other workers live: %v", n, tc.others, pins)
			} else {
				require.Equal(t, []int64{int64(n), 0}, pins, "with %d other workers live", tc.others)
			}
		})
	}
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

// Measures, and logs, what a worker process killed with SIGKILL costs the
// runs it held and the runs started after it died, with the default lease
// (15 s) and poll (1 s): the time from the kill to each held run's end in
// the surviving worker, and each new run's time from start to end (one at
// a time, until the held runs have all ended), marked when its notice named
// the killed worker. Nothing is asserted on the times. The surviving
// worker is in this process, the client in a process of its own.
func TestKilledWorkerRecoveryTimes(t *testing.T) {
	t.Parallel()
	e, dead, deadID := rosterDoomed(t, engine.DefaultPollInterval)
	schema, db := e.Schema(), e.DB()
	c, names := rosterClient(t, e, rbDefs(e)...)
	ctx := testenv.Ctx(t, 120*time.Second)

	const held = 5
	var runs []*engine.RunHandle
	for i := range held {
		id := fmt.Sprintf("held-%d", i)
		run, err := c.StartByName(ctx, "proc.crash", []byte(`"`+id+`"`), &engine.StartOptions{ID: id})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		for i := range held {
			if rbExecCounts(t, db, schema, fmt.Sprintf("held-%d", i))["two"] != 1 {
				return false
			}
		}
		return true
	}, "the killed worker's runs never reached their second step")
	testenv.Worker(t, e, engine.WorkerConfig{})
	dead.Kill(t)
	killed := time.Now()
	for i := range held {
		rbRelease(t, db, schema, fmt.Sprintf("held-%d", i))
	}
	ended := make(chan time.Duration, held)
	for _, run := range runs {
		go func() {
			_, err := run.Result(ctx)
			if err != nil {
				t.Errorf("held run %s: %v", run.RunID, err)
			}
			ended <- time.Since(killed)
		}()
	}
	var heldEnds []time.Duration
	var toDead, toLive []time.Duration
	for i := 0; len(heldEnds) < held; i++ {
		before := names.count()
		start := time.Now()
		run, err := c.StartByName(ctx, "proc.fleet", []byte(fmt.Sprint(i)), &engine.StartOptions{ID: fmt.Sprintf("after-%d", i)})
		require.NoError(t, err)
		_, err = run.Result(ctx)
		require.NoError(t, err)
		if took := time.Since(start); slices.Index(names.since(before), deadID) == 0 { // the start's notice
			toDead = append(toDead, took)
		} else {
			toLive = append(toLive, took)
		}
		for len(ended) > 0 {
			heldEnds = append(heldEnds, <-ended)
		}
	}
	slices.Sort(heldEnds)
	t.Logf("held runs ended elsewhere %v to %v after the SIGKILL (lease %v)", heldEnds[0].Round(time.Millisecond),
		heldEnds[held-1].Round(time.Millisecond), engine.DefaultLeaseTTL)
	t.Logf("%d runs started after it: %d named the killed worker (start to end: %s), %d named a live one or none (%s)",
		len(toDead)+len(toLive), len(toDead), spread(toDead), len(toLive), spread(toLive))
}

// spread renders durations' mean and maximum.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	var sum, maxD time.Duration
	for _, d := range ds {
		sum += d
		maxD = max(maxD, d)
	}
	return fmt.Sprintf("mean %v, max %v", (sum / time.Duration(len(ds))).Round(time.Millisecond), maxD.Round(time.Millisecond))
}
