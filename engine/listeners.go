package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// A run's close is announced (a notification on the done channel) for the
// Result calls that wait on it in other processes. Most closes have none:
// the caller that started the run in this process learns the outcome in
// process (Engine.afterCommit). Sending every close anyway cost, per
// workflow at one at a time, a statement of the notifier's and, in every
// process listening, a read of the notification and two goroutine
// hand-offs: about as much Go CPU as a commit.
//
// So a process whose Result calls wait on the database registers itself in
// result_listeners (resultListeners.hold) before it reads the run, and a
// commit statement that closes runs reports whether any registration is
// live; a committer announces its closes only then (finishSpec.quiet).
//
// The race is a close whose statement took its snapshot before the
// registration committed: it does not see it, and it may commit after the
// waiter read the run open. Such a close commits within quietCloseBound of
// its statement's start, which came before the registration's commit (a
// close that took longer, or whose outcome had to be read back, is
// announced anyway), so a waiter whose read came before the registration
// was quietWindow old reads the run once more when it is (Result's first
// wait is cut to it). A registration that lapsed (not renewed before it
// expired) begins a new window, and every waiter then reads again.

// quietCloseBound is how long a closing commit may take, from before its
// statement is sent to its acknowledgement, and still go unannounced when
// it saw no registration.
const quietCloseBound = time.Second

// quietWindow is how long after a registration committed a close that did
// not see it may still commit (quietCloseBound, with a margin).
const quietWindow = quietCloseBound + 250*time.Millisecond

const (
	// listenerTTL is how long a registration lives unrenewed.
	listenerTTL = 2 * time.Minute
	// listenerRenew is how often a live registration is renewed.
	listenerRenew = 20 * time.Second
	// listenerLinger keeps a registration for this long after the last
	// waiter, so a process that waits now and then does not register for
	// every call (each new registration starts a window of extra reads).
	listenerLinger = time.Minute
)

// resultListeners is this engine's registration in result_listeners.
type resultListeners struct {
	e  *Engine
	id string

	// regMu serialises registrations (hold's first, and the renewals).
	regMu sync.Mutex

	mu      sync.Mutex
	waiting int       // Result calls holding the registration
	used    time.Time // when the last of them began or ended
	// valid is when this process stops counting on the row: well before
	// it expires in the database.
	valid time.Time
	// since is when the current registration began (its first commit was
	// acknowledged); closes that did not see it commit before
	// since+quietWindow.
	since time.Time
	// renewing: the renewal loop runs.
	renewing bool
	stop     chan struct{}
	// window is quietWindow, unless a test set it.
	window time.Duration
	// listenOnce starts the LISTEN on the done channel; listened is
	// closed once it is in place (listen). late is set when a caller
	// stopped waiting for it before then.
	listenOnce sync.Once
	listened   chan struct{}
	late       atomic.Bool
}

func newResultListeners(e *Engine) *resultListeners {
	return &resultListeners{e: e, id: newRunID(), stop: make(chan struct{}), window: quietWindow, listened: make(chan struct{})}
}

// hold registers a Result call that waits on the database, registering the
// process first if it is not, and returns the time before which a read of
// the run may have missed a close that is not announced (see above). The
// caller calls release when it stops waiting.
func (l *resultListeners) hold(ctx context.Context) (time.Time, error) {
	l.mu.Lock()
	l.waiting++
	l.used = time.Now()
	if l.used.Before(l.valid) {
		since := l.since
		l.mu.Unlock()
		return since.Add(l.window), nil
	}
	l.mu.Unlock()
	if err := l.register(ctx); err != nil {
		l.release()
		return time.Time{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.since.Add(l.window), nil
}

// release ends a hold.
func (l *resultListeners) release() {
	l.mu.Lock()
	l.waiting--
	l.used = time.Now()
	l.mu.Unlock()
}

// register writes or renews the row (unless a concurrent call just did)
// and starts the renewal loop. The process listens on the done channel
// first.
func (l *resultListeners) register(ctx context.Context) error {
	l.regMu.Lock()
	defer l.regMu.Unlock()
	if err := l.listen(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	fresh := time.Now().Before(l.valid)
	l.mu.Unlock()
	if fresh {
		return nil
	}
	return l.write(ctx)
}

// listen makes the process listen on the done channel, from its first
// registration on: a process none of whose Result calls ever waits on the
// database (a worker process) does not read the closes announced for other
// processes' waiters, each of which every listening process used to read
// and parse (bench -workers 4: 4-6% of each worker process's CPU in its
// listener's goroutines). It returns once the LISTEN is in place, before
// the caller's first read of its run, or after CommitTimeout, or when ctx
// ends: a LISTEN connection that does not answer (its server stopped)
// must not hold a Result that can read its run, and it would not deliver
// the notice of a close committed before it is in place either. So until
// it is in place the waiters read their runs at the PollInterval pace
// (up), and once it is, a LISTEN that came late has every waiter read its
// run again, which finds a close committed before it. Only the first
// LISTEN waits for an answer; pq's Listen has no context, so it runs on a
// goroutine of its own, retried until it is in place or the engine closes.
func (l *resultListeners) listen(ctx context.Context) error {
	l.listenOnce.Do(func() {
		go func() {
			for attempt := 1; ; attempt++ {
				err := l.e.listener.Listen(l.e.store.channel[chanDone])
				if err == nil || errors.Is(err, pq.ErrChannelAlreadyOpen) {
					close(l.listened)
					if l.late.Load() {
						l.e.pokeWaiters()
					}
					return
				}
				t := time.NewTimer(retryPause(attempt))
				select {
				case <-t.C:
				case <-l.e.closed:
					t.Stop()
					return
				}
			}
		}()
	})
	t := time.NewTimer(l.e.cfg.CommitTimeout)
	defer t.Stop()
	select {
	case <-l.listened:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	// Stored before the caller reads its run: if the LISTEN is in place
	// after that read began, its goroutine sees late.
	l.late.Store(true)
	return ctx.Err()
}

// up reports whether the done channel's notices reach this process: the
// LISTEN is in place and its connection is not lost (a lost one is
// reconnected by pq, and every waiter then reads its run again). While it
// is not, a waiter does not count on a notice.
func (l *resultListeners) up() bool {
	select {
	case <-l.listened:
		return !l.e.listenerDown.Load()
	default:
		return false
	}
}

// write upserts the row, and removes rows that expired long ago (processes
// that died). regMu is held.
func (l *resultListeners) write(ctx context.Context) error {
	sent := time.Now()
	var live bool
	err := l.e.db.QueryRowContext(ctx, `WITH old AS (SELECT expires_at > now() AS live FROM `+l.e.store.listeners+` WHERE listener_id = $1),
		gone AS (DELETE FROM `+l.e.store.listeners+` WHERE expires_at < now() - interval '1 hour' AND listener_id <> $1),
		up AS (INSERT INTO `+l.e.store.listeners+` (listener_id, expires_at) VALUES ($1, now() + $2::interval)
			ON CONFLICT (listener_id) DO UPDATE SET expires_at = EXCLUDED.expires_at)
		SELECT COALESCE((SELECT live FROM old), false)`, l.id, ttlInterval(listenerTTL)).Scan(&live)
	if err != nil {
		return err
	}
	acked := time.Now()
	l.mu.Lock()
	lapsed := !live && !l.since.IsZero()
	if !live {
		l.since = acked
	}
	// The row expires listenerTTL after its transaction began, which was
	// after sent.
	l.valid = sent.Add(listenerTTL / 2)
	start := !l.renewing
	l.renewing = true
	l.mu.Unlock()
	if lapsed {
		// Closes may have gone unannounced while the row was expired:
		// every waiter reads its run again once they have all committed.
		time.AfterFunc(l.window, l.e.pokeWaiters)
	}
	if start {
		go l.renewLoop()
	}
	return nil
}

// renewLoop renews the registration while Result calls wait, and for
// listenerLinger after the last; then it removes the row and ends.
func (l *resultListeners) renewLoop() {
	t := time.NewTicker(listenerRenew)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.regMu.Lock()
		l.mu.Lock()
		idle := l.waiting == 0 && time.Since(l.used) > listenerLinger
		if idle {
			l.valid, l.since, l.renewing = time.Time{}, time.Time{}, false
		}
		l.mu.Unlock()
		ctx, cancel := l.e.store.bounded(l.e.cfg.CommitTimeout)
		var err error
		if idle {
			_, err = l.e.db.ExecContext(ctx, `DELETE FROM `+l.e.store.listeners+` WHERE listener_id = $1`, l.id)
		} else {
			err = l.write(ctx)
		}
		cancel()
		l.regMu.Unlock()
		if err != nil {
			// A row left behind expires; a failed renewal is tried again
			// at the next tick, and a lapse is caught by write.
			l.e.cfg.Logger.Warn("engine: renewing the result listener registration failed", "err", err)
		}
		if idle {
			return
		}
	}
}

// close stops the renewals and removes the row.
func (l *resultListeners) close() {
	close(l.stop)
	l.regMu.Lock()
	defer l.regMu.Unlock()
	l.mu.Lock()
	registered := l.renewing
	l.valid, l.renewing = time.Time{}, false
	l.mu.Unlock()
	if registered {
		ctx, cancel := l.e.store.bounded(l.e.cfg.CommitTimeout)
		_, _ = l.e.db.ExecContext(ctx, `DELETE FROM `+l.e.store.listeners+` WHERE listener_id = $1`, l.id)
		cancel()
	}
}
