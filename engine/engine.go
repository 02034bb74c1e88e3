package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgconn"
)

// Engine is graft's durable execution engine: the registry of workflows and
// activities, the group committer that records their steps, and the
// LISTEN connection that wakes workers and waiters.
type Engine struct {
	cfg    Config
	db     *sqlx.DB
	store  *store
	reg    *registry
	chains chains
	commit *committer
	notes  *notifier
	// outcomes reads the runs Result calls wait on, many per query.
	outcomes *outcomeReader
	// listeners registers the process while Result calls wait on the
	// database, so that closes elsewhere are announced (listeners.go).
	listeners *resultListeners

	listener *pq.Listener
	// listenDial dials the listener's connections and can close the
	// current one (listen_check.go); listenCheck is one check's state.
	listenDial  *listenDialer
	listenCheck listenCheck
	// listenerDown is set while the LISTEN connection is lost, from pq's
	// disconnection event to its reconnection.
	listenerDown atomic.Bool
	closed       chan struct{}
	// clientConflictAttempts, when set (tests), replaces
	// contentionRetries as the client's attempts of a Cancel or Reset
	// transaction (see againOnConflict).
	clientConflictAttempts int
	once                   sync.Once

	mu      sync.Mutex
	workers []*Worker
	waiters map[string][]resultWaiter

	// liveWorkers is how many workers the roster held live when one of
	// this process's workers last renewed its row (0 before any enrolled):
	// the process takes that share of the commit shards' work (pin).
	liveWorkers atomic.Int64

	// resultPoll is how long a Result call waiting on a run in another
	// process waits for the close notification before it reads the run
	// again anyway: only a safety net behind a lost notification.
	resultPoll atomic.Int64

	// hooks are points where tests step in to force a race; unset in
	// production.
	hooks testHooks
}

// resultSafetyPoll is the default of Engine.resultPoll. A closed run is
// announced by a notification, and every waiter is woken again when the
// LISTEN connection comes back after a drop, so this poll only bounds the
// delay a notification lost some other way can cause.
const resultSafetyPoll = 30 * time.Second

// testHooks are called, when set, at moments a test must hit exactly.
type testHooks struct {
	// blocked runs on each pass of a blocked run that finds nothing ready,
	// after the run decided whether to unload and before an unload is
	// written (an event sent from it then races with the unload).
	blocked atomic.Pointer[func(runID string, unloading bool)]
	// purged runs after each retention round with the runs it removed.
	purged atomic.Pointer[func(n int, err error)]
	// eagerGrace, when set, replaces eagerStartGrace.
	eagerGrace atomic.Int64
	// doneNotice learns of each done notification the listener reads.
	doneNotice atomic.Pointer[func()]
	// resultRead learns of each read of its run a Result call waiting on
	// the database makes, and why it makes it.
	resultRead atomic.Pointer[func(runID, why string)]
	// notice learns of each notification the listener reads.
	notice atomic.Pointer[func(channel, payload string)]
	// listenCheck learns of the checks of the LISTEN connection: "tick"
	// at each interval without a notification, "start" and "end" around
	// each check.
	listenCheck atomic.Pointer[func(event string)]
}

// resultWaiter is a Result call waiting for a run to close. A local waiter's run
// executes in this process, which hands over the outcome itself, so a
// LISTEN notice that carries no outcome does not wake it.
type resultWaiter struct {
	ch    chan *closedRun
	local bool
}

// New creates an engine. Call Migrate once (any process may), Register the
// definitions, then create workers and clients.
func New(cfg Config) (*Engine, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if !pgconn.Guards(c.DB.Driver()) {
		c.Logger.Warn("engine: Config.DB was not opened with engine.OpenDB (or NewConnector): " +
			"a database that stops answering can hold its connections, and the engine's commits with them")
	}
	ch, err := buildChains([]string{"Config.Interceptors"}, c.Interceptors)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: c, db: c.DB, store: newStore(c.DB, c.Schema), reg: newRegistry(),
		chains: ch, closed: make(chan struct{}), waiters: map[string][]resultWaiter{},
	}
	e.notes = newNotifier(e.store, c.Logger.Warn)
	e.outcomes = newOutcomeReader(e.store)
	e.listeners = newResultListeners(e)
	e.commit = newCommitter(e)
	e.resultPoll.Store(int64(resultSafetyPoll))
	e.listenDial = &listenDialer{}
	e.listener = pq.NewDialListener(e.listenDial, c.DatabaseURL, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			e.listenerDown.Store(true)
		case pq.ListenerEventConnected:
			e.listenerDown.Store(false)
		case pq.ListenerEventReconnected:
			e.listenerDown.Store(false)
			// Notices may have been missed while disconnected: look again,
			// for due work, closed runs and the events of loaded runs.
			e.pokeWorkers()
			e.pokeWaiters()
			for _, w := range e.localWorkers() {
				w.refreshAll()
			}
		}
	})
	// The done channel is listened to once a Result call waits on the
	// database (resultListeners.listen).
	for _, ch := range []string{e.store.channel[chanWork], e.store.channel[chanWake]} {
		if err := e.listener.Listen(ch); err != nil {
			e.listener.Close()
			e.commit.close()
			e.notes.close()
			e.outcomes.close()
			return nil, fmt.Errorf("engine: listen %s: %w", ch, err)
		}
	}
	go e.listen()
	go e.retentionLoop()
	return e, nil
}

// Register adds workflow and activity definitions. Names must be unique.
func (e *Engine) Register(defs ...Definition) error {
	for _, d := range defs {
		if err := e.reg.add(d); err != nil {
			return err
		}
	}
	return nil
}

// DB returns the database the engine uses.
func (e *Engine) DB() *sqlx.DB { return e.db }

// Schema returns graft's schema name.
func (e *Engine) Schema() string { return e.cfg.Schema }

// Close stops the committer and the listener. Stop workers first.
func (e *Engine) Close() error {
	e.once.Do(func() {
		close(e.closed)
		e.commit.close()
		e.notes.close()
		e.outcomes.close()
		e.listeners.close()
		e.store.closeHot()
		// A check waiting on a stalled connection holds the listener's
		// lock, which Close takes: the connection goes first.
		e.listenDial.drop()
		e.listener.Close()
		e.listenCheck.wg.Wait()
	})
	return nil
}

func (e *Engine) addWorker(w *Worker) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workers = append(e.workers, w)
}

func (e *Engine) removeWorker(w *Worker) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, x := range e.workers {
		if x == w {
			e.workers = append(e.workers[:i], e.workers[i+1:]...)
			return
		}
	}
}

func (e *Engine) localWorkers() []*Worker {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Worker(nil), e.workers...)
}

func (e *Engine) listen() {
	work, done, wake := e.store.channel[chanWork], e.store.channel[chanDone], e.store.channel[chanWake]
	for {
		select {
		case <-e.closed:
			return
		case n := <-e.listener.Notify:
			if n == nil {
				continue
			}
			if h := e.hooks.notice.Load(); h != nil {
				(*h)(n.Channel, n.Extra)
			}
			switch n.Channel {
			case work:
				if _, to, named := strings.Cut(n.Extra, workTo); named {
					e.pokeNamed(to)
				} else if strings.HasSuffix(n.Extra, workDueNow) {
					e.pokeWorkersDue()
				} else {
					e.pokeWorkers()
				}
			case done:
				if h := e.hooks.doneNotice.Load(); h != nil {
					(*h)()
				}
				e.dispatchDoneNotice(n.Extra)
			case wake:
				e.dispatchWake(strings.Split(n.Extra, ","))
			}
		case <-time.After(e.listenCheckInterval()):
			e.listenCheckEvent("tick")
			e.checkListen()
		}
	}
}

func (e *Engine) pokeWorkers() {
	for _, w := range e.localWorkers() {
		w.wakeUp()
	}
}

// pokeWorkersDue wakes the local workers for runs that are due now (see
// Worker.wakeDue).
func (e *Engine) pokeWorkersDue() {
	for _, w := range e.localWorkers() {
		w.wakeDue()
	}
}

// dispatchWake tells local workers that hold these runs to refresh them.
func (e *Engine) dispatchWake(ids []string) {
	for _, w := range e.localWorkers() {
		for _, id := range ids {
			w.wakeLocal(id)
		}
	}
	e.pokeWorkers()
}

// closedRun is how a run ended, handed to in-process waiters so they need
// not read it back.
type closedRun struct {
	status  Status
	output  []byte
	errJSON []byte
	// live is the value output encodes, when the run's end committed in
	// this process (finishSpec.live): see Run.Result.
	live any
}

// dispatchDone wakes waiters of closed runs; res, when given, is each run's
// outcome (from a local commit); without it waiters read the database.
func (e *Engine) dispatchDone(ids []string, res []*closedRun) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, id := range ids {
		var r *closedRun
		if res != nil {
			r = res[i]
		}
		e.wakeWaitersLocked(id, r)
	}
}

// wakeWaitersLocked hands r (nil: read the record) to the waiters of the
// closed run id; a local waiter waits on for the outcome itself. e.mu is
// held.
func (e *Engine) wakeWaitersLocked(id string, r *closedRun) {
	var kept []resultWaiter
	for _, w := range e.waiters[id] {
		if w.local && r == nil {
			kept = append(kept, w)
			continue
		}
		w.ch <- r
	}
	if len(kept) > 0 {
		e.waiters[id] = kept
	} else {
		delete(e.waiters, id)
	}
}

func (e *Engine) pokeWaiters() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, chs := range e.waiters {
		for _, w := range chs {
			w.ch <- nil
		}
		delete(e.waiters, id)
	}
}

// waitChan returns a channel that receives once runID is announced closed.
func (e *Engine) waitChan(runID string, local bool) chan *closedRun {
	ch := make(chan *closedRun, 1)
	e.mu.Lock()
	e.waiters[runID] = append(e.waiters[runID], resultWaiter{ch: ch, local: local})
	e.mu.Unlock()
	return ch
}

// afterCommit delivers in-process what the batch's notifications will also
// tell other processes, without waiting for the round trip.
func (e *Engine) afterCommit(batch []*writeOp, errs []error) {
	var done, unloaded []string
	var res []*closedRun
	for i, op := range batch {
		if errs[i] != nil || op.fin == nil {
			continue
		}
		if op.fin.status == StatusWaiting {
			unloaded = append(unloaded, op.runID)
			continue
		}
		done = append(done, op.runID)
		res = append(res, &closedRun{status: op.fin.status, output: op.fin.output, errJSON: op.fin.errJSON, live: op.fin.live})
	}
	if len(done) > 0 {
		e.dispatchDone(done, res)
	}
	if len(unloaded) > 0 {
		e.releaseLocalWaiters(unloaded)
	}
}

// releaseLocalWaiters hands nil to the in-process fast-path waiters of runs
// that were unloaded: their outcome may come from another worker much later,
// and a waiter per sleeping run would make sleepers cost memory. A Result
// call that is still waiting falls back to the database and notifications.
func (e *Engine) releaseLocalWaiters(ids []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		var kept []resultWaiter
		for _, w := range e.waiters[id] {
			if w.local {
				w.ch <- nil
				continue
			}
			kept = append(kept, w)
		}
		if len(kept) > 0 {
			e.waiters[id] = kept
		} else {
			delete(e.waiters, id)
		}
	}
}

// dropWaiter removes a waiter that stopped waiting (timeout, cancelled ctx).
func (e *Engine) dropWaiter(runID string, ch chan *closedRun) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var kept []resultWaiter
	for _, w := range e.waiters[runID] {
		if w.ch != ch {
			kept = append(kept, w)
		}
	}
	if len(kept) > 0 {
		e.waiters[runID] = kept
	} else {
		delete(e.waiters, runID)
	}
}

func newRunID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
