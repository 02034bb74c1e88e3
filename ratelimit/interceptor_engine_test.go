package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// These tests run the interceptor inside a real engine (PostgreSQL) with a
// RedisLimiter (Redis), as a deployment would.

// providerHeader carries the limiter key from the workflow's start into its
// activities.
const providerHeader = "provider"

// callTracker is the fake provider the test activities call: it counts calls
// in flight per key and the most it ever saw, and the highest attempt number.
type callTracker struct {
	mu         sync.Mutex
	inFlight   map[string]int
	max        map[string]int
	calls      map[string]int
	maxAttempt int
	byAttempt  map[int]int // calls by attempt number
	// gate, when set for a key, blocks that key's calls until it is closed;
	// runGates does the same for one workflow's calls, before its key's gate.
	gates, runGates map[string]chan struct{}
}

func newCallTracker() *callTracker {
	return &callTracker{inFlight: map[string]int{}, max: map[string]int{}, calls: map[string]int{}, byAttempt: map[int]int{},
		gates: map[string]chan struct{}{}, runGates: map[string]chan struct{}{}}
}

func (c *callTracker) gate(key string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := make(chan struct{})
	c.gates[key] = g
	return g
}

// gateRun blocks the calls of the workflow id until the channel is closed.
func (c *callTracker) gateRun(id string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := make(chan struct{})
	c.runGates[id] = g
	return g
}

func (c *callTracker) call(ctx context.Context, key string, work time.Duration) error {
	info := engine.ActivityInfoOf(ctx)
	c.mu.Lock()
	c.inFlight[key]++
	c.max[key] = max(c.max[key], c.inFlight[key])
	c.calls[key]++
	c.maxAttempt = max(c.maxAttempt, info.Attempt)
	c.byAttempt[info.Attempt]++
	g := c.gates[key]
	if rg := c.runGates[info.Workflow.WorkflowID]; rg != nil {
		g = rg
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight[key]--
		c.mu.Unlock()
	}()
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if work > 0 {
		t := time.NewTimer(work) // the provider's latency
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *callTracker) get(m func(*callTracker) map[string]int, key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m(c)[key]
}

func (c *callTracker) inFlightOf(key string) int {
	return c.get(func(c *callTracker) map[string]int { return c.inFlight }, key)
}
func (c *callTracker) maxOf(key string) int {
	return c.get(func(c *callTracker) map[string]int { return c.max }, key)
}
func (c *callTracker) callsOf(key string) int {
	return c.get(func(c *callTracker) map[string]int { return c.calls }, key)
}

// providerWork is what the test workflows send their activity.
type providerWork struct{ Work time.Duration }

// icptActivityTimeout is the test activity's StartToCloseTimeout. It also
// bounds the interceptor's waits, to half of it.
const icptActivityTimeout = time.Minute

// icptDefs are the test's activity and workflow: one call to the provider
// named by the run's provider header.
func icptDefs(calls func(ctx context.Context, key string, work time.Duration) error) (*engine.Activity[providerWork, string], *engine.Workflow[providerWork, string]) {
	return icptDefsTimeout(calls, icptActivityTimeout)
}

// icptDefsTimeout is icptDefs with the activity's StartToCloseTimeout.
func icptDefsTimeout(calls func(ctx context.Context, key string, work time.Duration) error, timeout time.Duration) (*engine.Activity[providerWork, string], *engine.Workflow[providerWork, string]) {
	act := engine.NewActivity("ratelimit.test.call", func(ctx context.Context, in providerWork) (string, error) {
		key := engine.ActivityHeadersOf(ctx)[providerHeader]
		if err := calls(ctx, key, in.Work); err != nil {
			return "", err
		}
		return key + "-ok", nil
	}).WithOptions(engine.ActivityOptions{
		StartToCloseTimeout: timeout,
		// A spent attempt would show in the record and in the tracker.
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond},
	})
	wf := engine.NewWorkflow("ratelimit.test.flow", func(ctx engine.Context, in providerWork) (string, error) {
		return act.Run(ctx, in)
	})
	return act, wf
}

// snoozeLog counts the interceptor's snoozes by cause, and keeps the
// workflows whose attempts were turned away without waiting (MaxWaiters).
type snoozeLog struct {
	total, unavailable, denied, overflow atomic.Int64

	mu         sync.Mutex
	turnedAway map[string]bool
}

func (s *snoozeLog) record(_ context.Context, in *engine.ActivityInput, err *engine.SnoozeError) {
	s.total.Add(1)
	if errors.Is(err, errTooManyWaiters) {
		s.overflow.Add(1)
		s.mu.Lock()
		if s.turnedAway == nil {
			s.turnedAway = map[string]bool{}
		}
		s.turnedAway[in.Info.Workflow.WorkflowID] = true
		s.mu.Unlock()
	}
	var unavailable *UnavailableError
	var denied *DeniedError
	switch {
	case errors.As(err, &unavailable):
		s.unavailable.Add(1)
	case errors.As(err, &denied):
		s.denied.Add(1)
	}
}

type icptEnv struct {
	e      *engine.Engine
	c      *engine.Client
	wf     *engine.Workflow[providerWork, string]
	calls  *callTracker
	snooze *snoozeLog
	icpt   *ActivityInterceptor
}

func (s *snoozeLog) wasTurnedAway(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.turnedAway[id]
}

// newIcptEnv sets up an engine whose worker runs the interceptor over l.
// tweak, if given, adjusts the interceptor's and the worker's configuration.
func newIcptEnv(t *testing.T, l Limiter, tweak func(*InterceptorConfig, *engine.WorkerConfig)) *icptEnv {
	t.Helper()
	return newIcptEnvTimeout(t, l, icptActivityTimeout, tweak)
}

// newIcptEnvTimeout is newIcptEnv with the activity's StartToCloseTimeout.
func newIcptEnvTimeout(t *testing.T, l Limiter, timeout time.Duration, tweak func(*InterceptorConfig, *engine.WorkerConfig)) *icptEnv {
	t.Helper()
	env := &icptEnv{calls: newCallTracker(), snooze: &snoozeLog{}}
	act, wf := icptDefsTimeout(env.calls.call, timeout)
	env.wf = wf
	env.e = testenv.Engine(t, &engine.Config{PollInterval: 50 * time.Millisecond})
	require.NoError(t, env.e.Register(act, wf))
	cfg := InterceptorConfig{Limiter: l, Key: KeyFromHeader(providerHeader), OnSnooze: env.snooze.record}
	wcfg := engine.WorkerConfig{}
	if tweak != nil {
		tweak(&cfg, &wcfg)
	}
	icpt, err := NewActivityInterceptor(cfg)
	require.NoError(t, err)
	env.icpt = icpt
	wcfg.Interceptors = append(wcfg.Interceptors, icpt)
	testenv.Worker(t, env.e, wcfg)
	env.c = env.e.Client()
	return env
}

func (env *icptEnv) start(t *testing.T, ctx context.Context, id, provider string, work time.Duration) *engine.Run[string] {
	t.Helper()
	run, err := env.wf.Start(ctx, env.c, providerWork{Work: work}, &engine.StartOptions{ID: id, Headers: engine.Headers{providerHeader: provider}})
	require.NoError(t, err)
	return run
}

// requireDone waits for the runs and checks that each called its provider
// once, in one attempt: snoozes did not spend retry attempts.
func (env *icptEnv) requireDone(t *testing.T, ctx context.Context, provider string, runs []*engine.Run[string]) {
	t.Helper()
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err, run.WorkflowID)
		require.Equal(t, provider+"-ok", out)
		hist, err := env.c.History(ctx, run.WorkflowID)
		require.NoError(t, err)
		require.Len(t, hist[0].Steps, 1)
		require.Equal(t, 1, hist[0].Steps[0].Attempts, "%s spent a retry attempt", run.WorkflowID)
	}
}

func (env *icptEnv) requireOneAttemptEach(t *testing.T) {
	t.Helper()
	env.calls.mu.Lock()
	defer env.calls.mu.Unlock()
	require.Equal(t, 1, env.calls.maxAttempt, "a snooze counted as an attempt")
}

// A burst of workflows against a limit of two: never more than two calls in
// flight, every workflow completes, the waits are snoozes and cost no retry
// attempt.
func TestInterceptorHoldsProviderToItsLimit(t *testing.T) {
	t.Parallel()
	rc := newRedisClient(t)
	l := newTestRedisLimiter(t, rc, RedisConfig{
		Limits: StaticLimits(Limits{Concurrency: 2, Rate: 200, Burst: 2}), RecoveryWindow: -1,
	})
	env := newIcptEnv(t, l, func(c *InterceptorConfig, _ *engine.WorkerConfig) { c.MaxWait = 10 * time.Millisecond })
	ctx := testenv.Ctx(t, 60*time.Second)

	var runs []*engine.Run[string]
	for n := range 20 {
		runs = append(runs, env.start(t, ctx, "burst-"+strconv.Itoa(n), "registry", 50*time.Millisecond))
	}
	env.requireDone(t, ctx, "registry", runs)
	require.Equal(t, 2, env.calls.maxOf("registry"))
	require.Equal(t, 20, env.calls.callsOf("registry"))
	require.Positive(t, env.snooze.total.Load(), "nothing ever waited: the test proves nothing")
	env.requireOneAttemptEach(t)
}

// Limits come from a LimitsTable that an operator changes while work is
// waiting: the new limit applies to the next attempts, without a restart.
func TestInterceptorLimitsChangeAtRunTime(t *testing.T) {
	t.Parallel()
	rc := newRedisClient(t)
	var limits LimitsTable
	limits.Set("registry", Limits{Concurrency: 1})
	l := newTestRedisLimiter(t, rc, RedisConfig{Limits: &limits, RecoveryWindow: -1})
	env := newIcptEnv(t, l, func(c *InterceptorConfig, _ *engine.WorkerConfig) { c.MaxWait = 20 * time.Millisecond })
	ctx := testenv.Ctx(t, 60*time.Second)
	gate := env.calls.gate("registry")

	var runs []*engine.Run[string]
	for n := range 6 {
		runs = append(runs, env.start(t, ctx, "change-"+strconv.Itoa(n), "registry", 0))
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return env.calls.inFlightOf("registry") == 1 && env.snooze.denied.Load() >= 10
	}, "one call in flight while the others snooze")
	require.Equal(t, 1, env.calls.maxOf("registry"))

	limits.Set("registry", Limits{Concurrency: 4})
	testenv.Eventually(t, 20*time.Second, func() bool { return env.calls.inFlightOf("registry") == 4 },
		"the raised limit was not applied")
	close(gate)
	env.requireDone(t, ctx, "registry", runs)
	require.Equal(t, 4, env.calls.maxOf("registry"))
	env.requireOneAttemptEach(t)
}

// Fail closed at the engine level: with Redis unreachable (a proxy in between,
// stopped), no activity runs, attempts are snoozed without being counted,
// and when Redis returns every workflow completes by itself.
func TestInterceptorRedisOutage(t *testing.T) {
	t.Parallel()
	direct := newRedisClient(t)
	p := startProxy(t, redisOptions(t).Addr)
	rc := failFastClient(t, p.addr)
	l := newTestRedisLimiter(t, rc, RedisConfig{
		Limits: StaticLimits(Limits{Concurrency: 3}), Prefix: testPrefix(t, direct), RecoveryWindow: -1,
	})
	env := newIcptEnv(t, l, func(c *InterceptorConfig, _ *engine.WorkerConfig) { c.MaxWait = 50 * time.Millisecond })
	ctx := testenv.Ctx(t, 60*time.Second)

	p.stop()
	var runs []*engine.Run[string]
	for n := range 5 {
		runs = append(runs, env.start(t, ctx, "outage-"+strconv.Itoa(n), "registry", 5*time.Millisecond))
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return env.snooze.unavailable.Load() >= 20 },
		"attempts are not being snoozed while Redis is away")
	require.Zero(t, env.calls.callsOf("registry"), "a slot was granted without Redis")
	for _, run := range runs {
		info, err := env.c.Describe(ctx, run.WorkflowID)
		require.NoError(t, err)
		require.Equal(t, engine.StatusRunning, info.Status)
	}

	p.start()
	env.requireDone(t, ctx, "registry", runs)
	require.Equal(t, 5, env.calls.callsOf("registry"))
	require.LessOrEqual(t, env.calls.maxOf("registry"), 3)
	env.requireOneAttemptEach(t)
}

// One provider saturated with a deep backlog, another idle: the idle one's
// work completes while the backlog waits, because the backlog holds at most
// MaxWaiters of the worker's activity slots besides its call in flight. The
// worker has four: the slow provider's call in flight and its two waiters
// hold three, and the attempts beyond are turned away at once. Without the
// bound a third waiter would take the last slot, and since no wait ends
// before the test does (MaxWait outlasts it), the fast provider's workflows
// would never run: the test proves the property by order of events, not by
// how long anything took. The slow provider's call is held on a gate until
// the fast workflows are done.
func TestInterceptorSaturatedProviderDoesNotStarveAnother(t *testing.T) {
	t.Parallel()
	rc := newRedisClient(t)
	var limits LimitsTable
	limits.Set("slow", Limits{Concurrency: 1})
	limits.Set("fast", Limits{Concurrency: 10})
	l := newTestRedisLimiter(t, rc, RedisConfig{Limits: &limits, RecoveryWindow: -1})
	// Waits are cut to half the attempt's timeout: both outlast ctx, so a
	// waiter holds its slot until the slow provider's gate opens.
	const maxWaiters, maxWait, activityTimeout = 2, time.Hour, 3 * time.Hour
	env := newIcptEnvTimeout(t, l, activityTimeout, func(c *InterceptorConfig, w *engine.WorkerConfig) {
		c.MaxWait = maxWait
		c.MaxWaiters = maxWaiters
		w.MaxActivities = 4
	})
	ctx := testenv.Ctx(t, 2*time.Minute)
	gate := env.calls.gate("slow")
	first := env.calls.gateRun("slow-first")

	// The interceptor learns the slow provider's grant rate from one grant
	// while others wait, so that it sends the attempts it turns away for a
	// few seconds at most (with no rate to go by it would send them for one
	// to two MaxWait, and they could not finish after the gate opens).
	slow := []*engine.Run[string]{env.start(t, ctx, "slow-first", "slow", 0)}
	testenv.Eventually(t, 20*time.Second, func() bool { return env.calls.inFlightOf("slow") == 1 },
		"the slow provider's first call did not start")
	for n := range maxWaiters {
		slow = append(slow, env.start(t, ctx, "slow-"+strconv.Itoa(n), "slow", 0))
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return env.icpt.backlog.waitingFor("slow") == maxWaiters },
		"the slow provider's attempts are not waiting")
	close(first)
	testenv.Eventually(t, 20*time.Second, func() bool {
		return env.calls.callsOf("slow") == 2 && env.calls.inFlightOf("slow") == 1 && env.icpt.backlog.rateFor("slow") > 0
	}, "the next slow call did not start, or the interceptor knows no grant rate")

	// A full backlog: one call in flight (held by the gate), MaxWaiters
	// waiting, the rest turned away each time they come back.
	for n := maxWaiters; n < 30; n++ {
		slow = append(slow, env.start(t, ctx, "slow-"+strconv.Itoa(n), "slow", 0))
	}
	// One of the newcomers takes the free waiting slot; every other one is
	// turned away.
	testenv.Eventually(t, 60*time.Second, func() bool {
		away := 0
		for _, run := range slow[maxWaiters+1:] {
			if env.snooze.wasTurnedAway(run.WorkflowID) {
				away++
			}
		}
		return away == len(slow)-maxWaiters-2 && env.icpt.backlog.waitingFor("slow") == maxWaiters
	}, "the slow provider's backlog did not settle at %d waiting attempts, the others turned away", maxWaiters)

	var fast []*engine.Run[string]
	for n := range 10 {
		fast = append(fast, env.start(t, ctx, "fast-"+strconv.Itoa(n), "fast", 0))
	}
	env.requireDone(t, ctx, "fast", fast)
	require.Equal(t, 1, env.calls.inFlightOf("slow"), "the slow call was still in flight")
	require.Equal(t, 2, env.calls.callsOf("slow"))
	require.Equal(t, maxWaiters, env.icpt.backlog.waitingFor("slow"), "the slow waiters still held their slots")
	require.Equal(t, env.snooze.overflow.Load(), env.snooze.total.Load(),
		"a wait ended before the fast workflows did (only turned-away attempts were snoozed)")

	close(gate)
	env.requireDone(t, ctx, "slow", slow)
	require.Equal(t, 1, env.calls.maxOf("slow"))
	env.requireOneAttemptEach(t)
}

// rateFor reports the grant rate the backlog knows for key (for tests).
func (b *backlog) rateFor(key string) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k := b.keys[key]; k != nil {
		return k.rateAt(time.Now())
	}
	return 0
}

// The killed-worker test runs a worker in a subprocess: this test binary run
// again with these variables set (see TestHelperInterceptorWorker).
const (
	icptHelperSchemaEnv = "GRAFT_RATELIMIT_ICPT_SCHEMA"
	icptHelperPrefixEnv = "GRAFT_RATELIMIT_ICPT_PREFIX"
	icptKillTTL         = time.Second
	icptKillConcurrency = 2
)

func icptKillLimits() LimitsSource {
	return StaticLimits(Limits{Concurrency: icptKillConcurrency, LeaseTTL: icptKillTTL})
}

// startedKey is a Redis set of the workflows whose activity started in the
// helper, so the parent knows when the helper holds its slots.
func startedKey(prefix string) string { return prefix + ":started" }

// A worker process is killed with SIGKILL while its activities hold every
// slot of a provider. The runs resume on a worker in this process once the
// engine's lease expires; the steps that were in flight run again (taking
// over their own leases, same idempotency key, if those still count), the
// others get slots as the dead leases expire or end, and every workflow
// completes, never above the limit; waiting for a slot spends no attempt.
func TestInterceptorWorkerKilledWhileHoldingSlots(t *testing.T) {
	t.Parallel()
	rc := newRedisClient(t)
	prefix := testPrefix(t, rc)
	t.Cleanup(func() { rc.Del(context.Background(), startedKey(prefix)) })
	e := testenv.Engine(t, &engine.Config{LeaseTTL: time.Second, PollInterval: 50 * time.Millisecond})
	calls := newCallTracker()
	act, wf := icptDefs(calls.call)
	require.NoError(t, e.Register(act, wf))
	c := e.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	helper := testenv.Spawn(t, "TestHelperInterceptorWorker", icptHelperSchemaEnv+"="+e.Schema(), icptHelperPrefixEnv+"="+prefix)
	helper.WaitLine(t, "ready", 30*time.Second)

	// No worker runs here yet, so the helper claims every run.
	var runs []*engine.Run[string]
	for n := range 5 {
		run, err := wf.Start(ctx, c, providerWork{}, &engine.StartOptions{ID: "kill-" + strconv.Itoa(n), Headers: engine.Headers{providerHeader: "registry"}})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		n, err := rc.SCard(ctx, startedKey(prefix)).Result()
		return err == nil && n == icptKillConcurrency
	}, "the helper never held the provider's slots")
	l := newTestRedisLimiter(t, rc, RedisConfig{Limits: icptKillLimits(), Prefix: prefix, RecoveryWindow: -1})
	_, err := l.Acquire(ctx, "registry", "newcomer")
	require.Equal(t, icptKillConcurrency, requireDenied(t, err, ReasonConcurrency).InUse)

	helper.Kill(t)

	icpt, err := NewActivityInterceptor(InterceptorConfig{Limiter: l, Key: KeyFromHeader(providerHeader), MaxWait: 50 * time.Millisecond})
	require.NoError(t, err)
	testenv.Worker(t, e, engine.WorkerConfig{Interceptors: []engine.Interceptor{icpt}})
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err, run.WorkflowID)
		require.Equal(t, "registry-ok", out)
	}
	require.Equal(t, 5, calls.callsOf("registry"), "every step ran here once")
	require.LessOrEqual(t, calls.maxOf("registry"), icptKillConcurrency)
	calls.mu.Lock()
	// The two steps in flight at the kill had a durable start: their lost
	// attempt counts, and they run here as attempt 2. The three that waited
	// for a slot spent no attempt.
	require.Equal(t, map[int]int{1: 3, 2: 2}, calls.byAttempt)
	calls.mu.Unlock()
}

// TestHelperInterceptorWorker is not a test: it is the worker process killed
// by TestInterceptorWorkerKilledWhileHoldingSlots. Its activities take their
// slots, say so, and block.
func TestHelperInterceptorWorker(t *testing.T) {
	schema, prefix := os.Getenv(icptHelperSchemaEnv), os.Getenv(icptHelperPrefixEnv)
	if schema == "" {
		t.Skip("helper process for TestInterceptorWorkerKilledWhileHoldingSlots")
	}
	rc := newRedisClient(t)
	e, err := engine.New(engine.Config{DB: testenv.DB(t), DatabaseURL: testenv.DatabaseURL(), Schema: schema,
		LeaseTTL: time.Second, PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	act, wf := icptDefs(func(ctx context.Context, key string, _ time.Duration) error {
		if err := rc.SAdd(ctx, startedKey(prefix), engine.ActivityInfoOf(ctx).Workflow.WorkflowID).Err(); err != nil {
			return err
		}
		<-ctx.Done() // hold the slot until SIGKILL
		return ctx.Err()
	})
	require.NoError(t, e.Register(act, wf))
	l, err := NewRedisLimiter(rc, RedisConfig{Limits: icptKillLimits(), Prefix: prefix, RecoveryWindow: -1})
	require.NoError(t, err)
	icpt, err := NewActivityInterceptor(InterceptorConfig{Limiter: l, Key: KeyFromHeader(providerHeader), MaxWait: 50 * time.Millisecond})
	require.NoError(t, err)
	w, err := e.NewWorker(engine.WorkerConfig{Interceptors: []engine.Interceptor{icpt}})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	fmt.Println("ready")
	// Block until SIGKILL. Should the parent die first, its end of stdin
	// closes and the helper leaves.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(1)
}
