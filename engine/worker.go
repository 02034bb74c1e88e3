package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of WorkerConfig, applied to fields left zero.
const (
	// DefaultQueue is the queue runs start on and workers claim from.
	DefaultQueue = "default"
	// DefaultMaxWorkflows bounds the runs a worker has loaded at once.
	DefaultMaxWorkflows = 1000
	// DefaultMaxActivities bounds the activity attempts a worker runs at once.
	DefaultMaxActivities = 500
	// DefaultClaimBatch bounds the runs claimed per query.
	DefaultClaimBatch = 200
)

// WorkerConfig configures a Worker. Zero values take the documented defaults.
type WorkerConfig struct {
	// ID names the worker in leases. Default "<hostname>-<pid>-<random>".
	// A worker given an ID takes over, when it starts, the runs still
	// leased under that ID: they belonged to a process that stopped without
	// giving them back (a crash, a SIGKILL), and are resumed at once rather
	// than when their leases expire. Two live workers must therefore never
	// share an ID (a worker that did would lose its runs, fenced, and
	// resume them elsewhere: safe, but churn).
	ID string
	// Queues the worker claims runs from. Default [DefaultQueue].
	Queues []string
	// Workflows restricts the workflow types this worker runs (by name).
	// Default: every registered workflow.
	Workflows []string
	// MaxWorkflows bounds runs loaded at once (running or briefly blocked).
	// Default DefaultMaxWorkflows (1000).
	MaxWorkflows int
	// MaxActivities bounds activity attempts running at once. Default
	// DefaultMaxActivities (500).
	MaxActivities int
	// ActivitiesPerSecond bounds the activity attempts this worker starts
	// per second (calls of the activity function); 0 means unlimited. A call
	// an interceptor stops before it runs (a snooze, see SnoozeError) takes
	// no token.
	ActivitiesPerSecond float64
	// ClaimBatch bounds runs claimed per query. Default DefaultClaimBatch (200).
	ClaimBatch int
	// Interceptors apply to this worker's calls, inside the engine's.
	Interceptors []Interceptor
}

// A worker's look for expired leases reads those that expired since its
// previous look, widened by expiredLookMargin (the window is measured on
// the worker's clock from when it sent the previous look, and each look's
// now() is taken when the database begins it, which a wait for a
// connection delays) and by two lease periods: those hold the runs taken
// from an expired lease by a worker that then died before its promotion
// pass, and the runs a look passed over while their rows were locked (see
// store.claimExpiredSQL). Every expiredFullEvery looks (about 16 lease
// periods) it reads them all: a run left behind longer than that range
// (locked at every look, or missed by a look delayed past the margin) is
// taken then.
const (
	expiredLookMargin = 5 * time.Second
	expiredFullEvery  = 64
)

// Worker claims due runs from its queues and executes them. Any number of
// workers, in any number of processes, share one database.
type Worker struct {
	e   *Engine
	cfg WorkerConfig
	id  string
	// takeOver: the ID was given, so runs leased under it when the worker
	// starts are a dead predecessor's (WorkerConfig.ID).
	takeOver bool
	types    []string
	chains   chains

	slots    chan struct{} // workflow slots
	actSlots chan struct{}
	limiter  *rate.Limiter

	mu   sync.Mutex
	runs map[string]*runState
	// arriving holds runs claimed (or eagerly started) whose run state is
	// not yet in runs; a wake-up for one of them is noted (true) here and
	// handed to it by launch, so a signal, cancellation or child result
	// committed while the run was loading is not missed.
	arriving map[string]bool
	// claiming counts the claims in flight; while one is, a wake-up for a
	// run that is neither loaded nor arriving is noted in claimWakes: the
	// claim reads its runs' signals in its own snapshot (store.claimSQL),
	// and a signal committed after that is announced before the claim
	// returns and its runs are marked arriving.
	claiming   int
	claimWakes map[string]bool
	running    bool
	// stopped is set by Stop, under mu, when it marks the loaded runs
	// draining; an eager start that reserved a slot before Stop then gives
	// its new run back instead of launching it, so none runs on a stopped
	// worker.
	stopped bool

	lastExpiredScan time.Time // only touched by the claim loop
	// expiredLooks counts the looks for expired leases; expiredAll asks
	// the next one to read every expired lease, not only those that
	// expired since the previous look (which failed, or filled its batch
	// and may have left some). Only touched by the claim loop.
	expiredLooks int
	expiredAll   bool
	// starved is set while the claim loop waits with every workflow slot
	// taken: due work may be left unclaimed, so a run that gives its slot
	// back wakes the loop. Otherwise the slot of a run that closed here has
	// nothing waiting for it (new work is announced), and waking the loop
	// would cost a claim and a wake-time query per finished run.
	starved atomic.Bool
	// lookAhead asks the claim loop to read the next wake time again
	// after its next claim (see wakeUp and wakeDue).
	lookAhead atomic.Bool
	// named is set by a work notice that names this worker (roster.go)
	// until a claim takes every due run it can: a worker that fills its
	// slots first hands the notice on to every worker.
	named atomic.Bool

	// renewHook, when set (tests), is called before each background renewal.
	renewHook func()
	// claimHook, when set (tests), is called before each claim's queries.
	claimHook func()

	// runners hands a run's body to a goroutine that ended its previous
	// run and waits for another (see goRun); idleRunners counts those
	// waiting.
	runners     chan func()
	idleRunners atomic.Int32

	poke     chan struct{}
	stopping chan struct{}
	stopOnce sync.Once
	// loopCtx is the parent of the claim loop's queries; Stop ends it
	// (endLoop) when its own context ends while a claim, bounded only by
	// LeaseTTL, is in flight, so a stalled database cannot hold Stop.
	loopCtx  context.Context
	endLoop  context.CancelFunc
	loopDone chan struct{}
	// rosterDone is closed when rosterLoop has ended.
	rosterDone chan struct{}
	wg         sync.WaitGroup
}

// NewWorker creates a worker for the engine's registered workflows.
func (e *Engine) NewWorker(cfg WorkerConfig) (*Worker, error) {
	takeOver := cfg.ID != ""
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newRunID()[24:])
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{DefaultQueue}
	}
	cfg.MaxWorkflows = cmp.Or(cfg.MaxWorkflows, DefaultMaxWorkflows)
	cfg.MaxActivities = cmp.Or(cfg.MaxActivities, DefaultMaxActivities)
	cfg.ClaimBatch = cmp.Or(cfg.ClaimBatch, DefaultClaimBatch)
	switch {
	case cfg.MaxWorkflows < 0:
		return nil, fmt.Errorf("engine: WorkerConfig.MaxWorkflows must be positive")
	case cfg.MaxActivities < 0:
		return nil, fmt.Errorf("engine: WorkerConfig.MaxActivities must be positive")
	case cfg.ActivitiesPerSecond < 0:
		return nil, fmt.Errorf("engine: WorkerConfig.ActivitiesPerSecond must not be negative")
	case cfg.ClaimBatch < 0:
		return nil, fmt.Errorf("engine: WorkerConfig.ClaimBatch must be positive")
	}
	types := cfg.Workflows
	if len(types) == 0 {
		for name := range e.reg.workflows {
			types = append(types, name)
		}
	}
	for _, t := range types {
		if e.reg.workflows[t] == nil {
			return nil, fmt.Errorf("engine: WorkerConfig.Workflows: %w: %q", ErrUnknownWorkflow, t)
		}
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("engine: worker has no workflows: register them before creating workers")
	}
	ch, err := buildChains([]string{"Config.Interceptors", "WorkerConfig.Interceptors"}, e.cfg.Interceptors, cfg.Interceptors)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		e: e, cfg: cfg, id: cfg.ID, types: types, takeOver: takeOver,
		chains:   ch,
		slots:    make(chan struct{}, cfg.MaxWorkflows),
		actSlots: make(chan struct{}, cfg.MaxActivities),
		runs:     map[string]*runState{},
		arriving: map[string]bool{},
		poke:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
		runners:  make(chan func()),
		loopDone: make(chan struct{}),

		rosterDone: make(chan struct{}),
	}
	w.loopCtx, w.endLoop = context.WithCancel(context.Background())
	if cfg.ActivitiesPerSecond > 0 {
		burst := int(cfg.ActivitiesPerSecond)
		if burst < 1 {
			burst = 1
		}
		w.limiter = rate.NewLimiter(rate.Limit(cfg.ActivitiesPerSecond), burst)
	}
	return w, nil
}

// ID returns the worker's lease owner name.
func (w *Worker) ID() string { return w.id }

// Start begins claiming and running work. It returns once the worker has
// enrolled in the roster and published the signal declarations of its
// workflow types (see signal_publish.go; a failure of either is logged,
// not returned).
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("engine: worker already started")
	}
	if w.stopped {
		w.mu.Unlock()
		return errors.New("engine: worker stopped")
	}
	w.running = true
	w.mu.Unlock()
	if w.takeOver {
		// The first claim pass takes expired leases, these included.
		if err := w.e.store.expireLeases(ctx, w.id); err != nil {
			w.e.cfg.Logger.Warn("engine: taking over the runs of a previous worker with this ID failed; they resume when their leases expire",
				"worker", w.id, "err", err)
		}
	}
	// Enrolled before it returns, so the notices of starts that follow
	// may name it; until it is, they wake every worker.
	rctx, cancel := context.WithTimeout(ctx, w.e.cfg.CommitTimeout)
	if live, err := w.e.store.enrol(rctx, w.id, w.cfg.Queues, w.types); err == nil {
		w.e.liveWorkers.Store(int64(live))
	} else {
		w.e.cfg.Logger.Warn("engine: enrolling the worker in the roster failed; notices of new runs wake every worker until it is",
			"worker", w.id, "err", err)
	}
	cancel()
	// The signals its workflow types declare, for the processes that do
	// not register them (see signal_publish.go).
	pctx, cancel := context.WithTimeout(ctx, w.e.cfg.CommitTimeout)
	if _, err := w.publishSignals(pctx); err != nil {
		w.e.cfg.Logger.Warn("engine: publishing the workflows' signal declarations failed; processes that do not register them offer only what was published before",
			"worker", w.id, "err", err)
	}
	cancel()
	w.e.addWorker(w)
	go w.loop()
	go w.renewLoop()
	go w.rosterLoop()
	return nil
}

// Stop drains the worker: it stops claiming, lets running activities finish,
// records each loaded run as waiting at its next wait, and returns when all
// runs are handed back or ctx ends (then remaining leases are released so
// other workers resume them at once).
func (w *Worker) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopping) })
	defer w.endLoop()
	w.mu.Lock()
	if !w.running { // never started: no loop to wait for
		w.stopped = true
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	w.leaveRoster(ctx)
	var err error
	select {
	case <-w.loopDone:
	case <-ctx.Done():
		// The loop's claim in flight waits up to LeaseTTL (a database
		// that stopped answering): it is given up now, and the runs it
		// may have claimed are left to expire. A cancelled statement
		// ends within two seconds on a pool from OpenDB (see NewConnector).
		err = ctx.Err()
		w.endLoop()
		<-w.loopDone
	}
	w.mu.Lock()
	w.stopped = true
	for _, s := range w.runs {
		s.mu.Lock()
		s.draining = true
		s.mu.Unlock()
		s.poke()
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	if err == nil {
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		var rs []release
		w.mu.Lock()
		for id, s := range w.runs {
			s.abandon()
			rs = append(rs, release{fence: s.fence(), runID: id, wakeAt: w.e.cfg.Clock.Now()})
		}
		w.mu.Unlock()
		w.giveBack(rs)
	}
	w.e.removeWorker(w)
	return err
}

// wakeUp makes the claim loop claim, then look up the next wake time again
// if nothing was due: the wake-up may come from a run that will be due later
// (an unload, a delayed start, a run given back).
func (w *Worker) wakeUp() {
	w.lookAhead.Store(true)
	w.wakeDue()
}

// wakeDue makes the claim loop claim, for runs that are due now: if another
// worker took them first, the loop's last look at the next wake time still
// stands, and it does not read it again.
func (w *Worker) wakeDue() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

func (w *Worker) loop() {
	defer close(w.loopDone)
	var clockC <-chan struct{}
	if an, ok := w.e.cfg.Clock.(advanceNotifier); ok {
		clockC = an.subscribe()
	}
	// look: the next claim that leaves slots free reads the next wake time
	// (after a wait that ran out, or a wake-up that may bring a later one);
	// next and nextOK are what it read last.
	look := true
	var next time.Time
	var nextOK bool
	for {
		select {
		case <-w.stopping:
			return
		default:
		}
		named := w.named.Swap(false)
		free := cap(w.slots) - len(w.slots)
		if free == 0 {
			// A slot freed after this store sees starved set and wakes
			// the loop; one freed before it is seen by the second look.
			w.starved.Store(true)
			if free = cap(w.slots) - len(w.slots); free > 0 {
				w.starved.Store(false)
			}
		} else {
			w.starved.Store(false)
		}
		if free == 0 && named {
			// The runs a notice sent here may still be due: another
			// worker takes them now rather than at its next poll.
			w.e.notes.handOn(w.cfg.Queues)
		}
		claimed := 0
		if free > 0 {
			n := min(free, w.cfg.ClaimBatch)
			got, err := w.claimAndStart(n)
			if err != nil {
				w.e.cfg.Logger.Warn("engine: claim failed", "worker", w.id, "err", err)
			}
			claimed = got
			if got == n {
				if named {
					w.named.Store(true) // the next pass claims again or hands on
				}
				continue
			}
		}
		wait := w.e.cfg.PollInterval
		if claimed == 0 && free > 0 {
			// With several workers, most wake-ups for new runs find them
			// taken by another: the next wake time read before still holds
			// then, and reading it again on every such wake-up cost one
			// query per empty claim (bench -workers 4: 0.12 per workflow).
			if w.lookAhead.Swap(false) || look {
				ctx, cancel := context.WithTimeout(w.loopCtx, w.e.cfg.CommitTimeout)
				t, ok, err := w.e.store.nextWake(ctx, w.id, w.cfg.Queues, w.types)
				cancel()
				next, nextOK = t, ok && err == nil
			}
			if nextOK {
				if d := next.Sub(w.e.cfg.Clock.Now()); d < wait {
					wait = max(d, time.Millisecond)
				}
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-w.stopping:
			timer.Stop()
			return
		case <-w.poke:
			look = false
		case <-clockC:
			look = true
		case <-timer.C:
			look = true
		}
		timer.Stop()
	}
}

// claimAndStart claims up to n runs with their buffered signals, loads the
// histories of those that have one and starts them. It returns how many it claimed.
func (w *Worker) claimAndStart(n int) (int, error) {
	// Bounded, so that a database that stops answering cannot hold the
	// worker's claims for ever (see NewConnector), and ended by Stop once
	// its context ends; a claim whose answer is lost leaves its runs to
	// expire.
	ctx, cancel := context.WithTimeout(w.loopCtx, w.e.cfg.LeaseTTL)
	defer cancel()
	// Reserve slots first so a claimed run always has one.
	reserved := 0
	for reserved < n {
		select {
		case w.slots <- struct{}{}:
			reserved++
			continue
		default:
		}
		break
	}
	now, ttl := w.e.cfg.Clock.Now(), w.e.cfg.LeaseTTL
	// Expired leases are rare; look for them a few times per lease period,
	// and first, so that a crashed worker's runs are taken within a bound
	// even behind a backlog of due runs that fills every claim.
	var rows []*runRow
	sigs, raced := map[string][]*signalRow{}, map[string]bool{}
	var err error
	held := w.loadedIDs() // not claimed again when their renewal is late
	w.mu.Lock()
	w.claiming++
	w.mu.Unlock()
	if w.claimHook != nil {
		w.claimHook()
	}
	if since := time.Since(w.lastExpiredScan); since > ttl/4 {
		// Each look reads the leases that expired since the previous one
		// (see store.claimExpired); now and then, or when the previous
		// look may have left some behind, it reads them all.
		within := since + expiredLookMargin
		if w.lastExpiredScan.IsZero() || w.expiredAll || w.expiredLooks%expiredFullEvery == 0 {
			within = 0
		}
		w.lastExpiredScan = time.Now()
		w.expiredLooks++
		var expSigs map[string][]*signalRow
		var expRaced map[string]bool
		rows, expSigs, expRaced, err = w.e.store.claimExpired(ctx, w.id, w.cfg.Queues, w.types, reserved, now, ttl, held, within)
		w.expiredAll = err != nil || len(rows) == reserved
		maps.Copy(sigs, expSigs)
		maps.Copy(raced, expRaced)
	}
	if err == nil && len(rows) < reserved {
		var more []*runRow
		var moreSigs map[string][]*signalRow
		var moreRaced map[string]bool
		more, moreSigs, moreRaced, err = w.e.store.claimDue(ctx, w.id, w.cfg.Queues, w.types, reserved-len(rows), now, ttl, held)
		rows = append(rows, more...)
		maps.Copy(sigs, moreSigs)
		maps.Copy(raced, moreRaced)
	}
	// From here a wake-up for the claimed runs is kept for them (arriving):
	// one for a signal the claim did not read came after the claim began,
	// and was noted in claimWakes if it came before this; a run whose row
	// says it had such a signal (raced) is refreshed in any case.
	w.mu.Lock()
	for _, r := range rows {
		w.arriving[r.RunID] = w.claimWakes[r.RunID] || raced[r.RunID]
	}
	if w.claiming--; w.claiming == 0 {
		w.claimWakes = nil
	}
	w.mu.Unlock()
	for i := len(rows); i < reserved; i++ {
		<-w.slots
	}
	if len(rows) == 0 {
		return 0, err
	}
	claimErr := err // rows claimed before a later claim query failed still run
	ids := make([]string, 0, len(rows))
	for _, r := range rows {
		if r.Loads > 1 || r.StartReason != "start" {
			ids = append(ids, r.RunID)
		}
	}
	hist := map[string][]*stepRow{}
	if len(ids) > 0 {
		if hist, err = w.e.store.loadHistories(ctx, ids); err != nil {
			w.releaseAll(rows)
			return 0, err
		}
	}
	for _, r := range rows {
		w.launch(r, hist[r.RunID], sigs[r.RunID])
	}
	return len(rows), claimErr
}

func (w *Worker) releaseAll(rows []*runRow) {
	rs := make([]release, len(rows))
	for i, r := range rows {
		w.unexpect(r.RunID)
		rs[i] = release{fence: fence{w.id, r.Loads}, runID: r.RunID, wakeAt: w.e.cfg.Clock.Now()}
	}
	w.giveBack(rs)
	for range rows {
		<-w.slots
	}
}

// giveBack releases runs this worker claimed and no longer runs, in one
// statement bounded by CommitTimeout: a database that stops answering
// cannot hold a worker's Stop or its loop (see NewConnector). Runs it
// fails to release are resumed when their leases expire.
func (w *Worker) giveBack(rs []release) {
	if len(rs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.e.cfg.CommitTimeout)
	defer cancel()
	if err := w.e.store.releaseRuns(ctx, rs); err != nil {
		w.e.cfg.Logger.Warn("engine: runs not released; their leases will expire", "worker", w.id, "runs", len(rs), "err", err)
	}
}

// launch starts a claimed run's goroutine; the caller holds a slot for it.
func (w *Worker) launch(r *runRow, steps []*stepRow, sigs []*signalRow) {
	w.launchRun(r, steps, sigs, nil)
}

// launchRun is launch; birth, when set, is the run's insert (an eager start
// not yet written), which the run submits with its first records. It
// returns nil when the worker is stopping and the run was not launched
// (its slot is then given back; an unwritten birth is the caller's).
func (w *Worker) launchRun(r *runRow, steps []*stepRow, sigs []*signalRow, birth *writeOp) *runState {
	def := w.e.reg.workflows[r.WorkflowType]
	w.mu.Lock()
	if w.stopped {
		delete(w.arriving, r.RunID)
		w.mu.Unlock()
		if birth == nil {
			ctx, cancel := context.WithTimeout(context.Background(), w.e.cfg.CommitTimeout)
			if err := w.e.store.unclaimNew(ctx, w.id, r.RunID); err != nil {
				w.giveBack([]release{{fence: fence{w.id, r.Loads}, runID: r.RunID, wakeAt: w.e.cfg.Clock.Now()}})
			}
			cancel()
			w.e.releaseLocalWaiters([]string{r.RunID})
		}
		<-w.slots
		return nil
	}
	s := newRunState(w.e, w, modeLive, r, def, &w.chains, steps, sigs)
	s.launched = time.Now()
	s.shard = w.e.commit.pin()
	if birth != nil {
		s.birth, s.born = birth, make(chan struct{})
	}
	if old := w.runs[r.RunID]; old != nil {
		// An earlier copy given back (its write was refused) may still be
		// on its way out; it must not write under this claim.
		old.abandon()
	}
	w.runs[r.RunID] = s
	missed := w.arriving[r.RunID]
	delete(w.arriving, r.RunID)
	w.wg.Add(1) // under mu: Stop waits only after setting stopped
	w.mu.Unlock()
	if missed {
		s.requestRefresh()
	}
	w.goRun(func() {
		defer func() {
			w.e.commit.unpin(s.shard)
			s.abandon()
			w.mu.Lock()
			if w.runs[r.RunID] == s {
				delete(w.runs, r.RunID)
			}
			w.mu.Unlock()
			if !s.closedHere() {
				// The run left this process open (unloaded, given back,
				// its lease lost): an eager start's in-process waiter
				// would never hear of its end.
				w.e.releaseLocalWaiters([]string{r.RunID})
			}
			<-w.slots
			w.wg.Done()
			if w.starved.Load() || !s.closedHere() {
				// A run left open (unloaded, given back) may be due
				// soon: the loop looks at the next wake time again.
				w.wakeUp()
			}
		}()
		s.main()
	})
	return s
}

// maxIdleRunners bounds the goroutines kept waiting for a next run.
const maxIdleRunners = 8

// goRun runs f, a run's body, on a goroutine that ended its previous run
// and waits for another, if there is one, or else on a new goroutine. A
// run's goroutine grows its stack to tens of kilobytes (the commit path,
// JSON decoding); a new one starts small and copies its stack as it grows,
// which at one workflow at a time was a twentieth of the engine's CPU. A
// kept one has grown already, and handing it a run costs what starting a
// goroutine does.
func (w *Worker) goRun(f func()) {
	select {
	case w.runners <- f:
	default:
		go w.runner(f)
	}
}

// runner runs f, then each run goRun hands it while it waits, as long as
// no more than maxIdleRunners wait; it ends when the worker stops. A run
// that ends its goroutine (runtime.Goexit, when it unloads) ends the
// runner with it.
func (w *Worker) runner(f func()) {
	for {
		f()
		if w.idleRunners.Add(1) > maxIdleRunners {
			w.idleRunners.Add(-1)
			return
		}
		select {
		case f = <-w.runners:
			w.idleRunners.Add(-1)
		case <-w.stopping:
			w.idleRunners.Add(-1)
			return
		}
	}
}

// tryReserve takes a workflow slot for an eager start, if one is free.
func (w *Worker) tryReserve(queue, typ string) bool {
	select {
	case <-w.stopping:
		return false
	default:
	}
	if !slices.Contains(w.cfg.Queues, queue) || !slices.Contains(w.types, typ) {
		return false
	}
	select {
	case w.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (w *Worker) acquireActivitySlot(ctx context.Context) error {
	select {
	case w.actSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// waitRate waits for ActivitiesPerSecond's token. It is taken right before
// the activity function runs, once the attempt's start is durable, so the
// rate bounds the calls that go out, whatever a commit's latency, and a call
// an interceptor stops first (a snooze) takes none.
func (w *Worker) waitRate(ctx context.Context) error {
	if w.limiter == nil {
		return nil
	}
	return w.limiter.Wait(ctx)
}

func (w *Worker) releaseActivitySlot() { <-w.actSlots }

// renewLoop extends this worker's leases. A renewal stops at once the runs
// whose lease another worker took, and refreshes those that had an event
// since they last looked (its notification may have been lost). If renewal
// keeps failing past the lease TTL, the worker drops its runs: another
// worker may own them by now.
func (w *Worker) renewLoop() {
	ttl := w.e.cfg.LeaseTTL
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	p := time.NewTicker(min(ttl/3, promoteAfter))
	defer p.Stop()
	last := time.Now()
	for {
		select {
		case <-w.loopDone:
			w.mu.Lock()
			n := len(w.runs)
			w.mu.Unlock()
			if n == 0 {
				return
			}
		default:
		}
		select {
		case <-t.C:
		case <-p.C:
			// Nothing depends on it: a failure leaves the runs to the
			// next renewal.
			_ = w.promoteOnce()
			continue
		case <-w.e.closed:
			return
		}
		if w.renewHook != nil {
			w.renewHook()
		}
		err := w.renewOnce()
		if err == nil {
			last = time.Now()
			continue
		}
		w.e.cfg.Logger.Warn("engine: lease renewal failed", "worker", w.id, "err", err)
		if time.Since(last) > ttl {
			w.mu.Lock()
			for _, s := range w.runs {
				s.abandon()
			}
			w.mu.Unlock()
		}
	}
}

// promoteAfter is how long a run may stay leased until claimed_until, in
// its row's pending or waiting status or with the expired lease it was
// claimed from (see store.claimSQL), before the worker marks it running
// with its lease in lease_expires_at. A claim of due runs reads the
// (queue, wake_at) index from its head and passes over the runs claimed
// there and still open, one heap fetch each (a look for expired leases
// likewise passes over the runs it took); a run that lives longer than
// this is marked running (and leaves that part of the index) within about
// promoteAfter instead of at the next renewal, a third of LeaseTTL: 15,000
// claimed runs at the head of a million made a claim take 120-140 ms and
// a look at the next wake time 63 ms. Most runs end or wait again sooner,
// so their claims stay heap-only updates.
const promoteAfter = time.Second

// renewOnce renews the leases of the loaded runs, stops the runs whose
// lease was lost and refreshes the runs whose event counter moved.
func (w *Worker) renewOnce() error {
	return w.renewSome(func(*runState) bool { return true })
}

// promoteOnce renews, and so marks running, the runs leased until
// claimed_until by a claim at least promoteAfter ago that no renewal has
// marked yet.
func (w *Worker) promoteOnce() error {
	return w.renewSome(func(s *runState) bool {
		return s.row.ClaimedUntil.Valid && !s.promoted.Load() && time.Since(s.launched) >= promoteAfter
	})
}

// renewSome renews the leases of the loaded runs that pick selects, as
// renewOnce does.
func (w *Worker) renewSome(pick func(*runState) bool) error {
	ttl := w.e.cfg.LeaseTTL
	w.mu.Lock()
	states := make([]*runState, 0, len(w.runs))
	for _, s := range w.runs {
		if !s.unborn() && pick(s) { // an eager start not yet written holds no lease
			states = append(states, s)
		}
	}
	w.mu.Unlock()
	if len(states) == 0 {
		return nil
	}
	runs := make([]fencedRun, len(states))
	for i, s := range states {
		runs[i] = fencedRun{s.row.RunID, s.row.Loads}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ttl/3)
	defer cancel()
	got, err := w.e.store.renewLeases(ctx, w.id, runs, ttl)
	if err != nil {
		return err
	}
	for _, s := range states {
		r := got[s.row.RunID]
		switch {
		case r.ended:
			// The copy's own end or unload committed under this claim
			// since the runs were listed: it is on its way out.
		case !r.held && s.handingOn():
			// The copy's end or unload is submitted: once it committed,
			// the run was due to any worker, and one has taken it (a
			// signal or a cancellation woke it); or the write is refused,
			// which tells the copy. Either way it writes nothing more.
			w.e.cfg.Logger.Debug("engine: run taken on elsewhere after its end or unload here", "worker", w.id, "run_id", s.row.RunID)
		case !r.held:
			if s.live() {
				w.e.cfg.Logger.Warn("engine: lease lost; stopping the run here", "worker", w.id, "run_id", s.row.RunID)
			}
			s.abandon()
		case s.behind(r.eventSeq):
			s.promoted.Store(true)
			s.requestRefresh()
		default:
			s.promoted.Store(true)
		}
	}
	return nil
}

// refreshAll refreshes every loaded run (after notifications may have been
// missed).
func (w *Worker) refreshAll() {
	w.mu.Lock()
	states := make([]*runState, 0, len(w.runs))
	for _, s := range w.runs {
		states = append(states, s)
	}
	w.mu.Unlock()
	for _, s := range states {
		s.requestRefresh()
	}
}

// loadedIDs returns the IDs of the loaded runs.
func (w *Worker) loadedIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.runs))
	for id := range w.runs {
		ids = append(ids, id)
	}
	return ids
}

// local returns the loaded run, if this worker has it.
func (w *Worker) local(runID string) *runState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runs[runID]
}

// wakeLocal refreshes the run if this worker holds it, or notes the wake-up
// for launch if the run is arriving.
func (w *Worker) wakeLocal(runID string) {
	w.mu.Lock()
	s := w.runs[runID]
	if s == nil {
		if _, ok := w.arriving[runID]; ok {
			w.arriving[runID] = true
		} else if w.claiming > 0 {
			if w.claimWakes == nil {
				w.claimWakes = map[string]bool{}
			}
			w.claimWakes[runID] = true
		}
	}
	w.mu.Unlock()
	if s != nil {
		s.requestRefresh()
	}
}

// expect marks runs as arriving, before their signals are read (claim) or
// before the transaction that creates them commits (eager start).
func (w *Worker) expect(ids ...string) {
	w.mu.Lock()
	for _, id := range ids {
		w.arriving[id] = false
	}
	w.mu.Unlock()
}

// unexpect forgets arriving runs that will not be launched.
func (w *Worker) unexpect(ids ...string) {
	w.mu.Lock()
	for _, id := range ids {
		delete(w.arriving, id)
	}
	w.mu.Unlock()
}
