package ratelimit

import (
	"context"
	"errors"
	"github.com/graftdev/graft/engine"
	"math/rand/v2"
	"time"
)

const (
	// minSleep keeps a poller from spinning on sub-millisecond hints.
	minSleep = 100 * time.Microsecond
	// Backoff while the limiter is unavailable: start small so a blip costs
	// little, cap it so work resumes soon after Redis returns.
	unavailableFirst = 20 * time.Millisecond
	unavailableMax   = time.Second
	// queuedRetryAfter is the snooze hint for a waiter that gave up before it
	// ever reached the head of its queue and so has no hint of its own.
	queuedRetryAfter = 100 * time.Millisecond
)

// errQueued is the cause of a snooze that never reached the limiter.
var errQueued = errors.New("ratelimit: still queued behind other waiters of this process")

// Wait acquires a lease for key, retrying as the limiter's hints advise for up
// to maxWait. It returns the lease; an *engine.SnoozeError when maxWait passed
// (or the hint reaches past it) so the caller can give the work back and retry
// after its After; ctx's error if ctx ended; or any other error the
// limiter returned (bad arguments, bad limits) at once.
//
// While the limiter is unavailable Wait keeps trying with backoff, so work
// resumes by itself when Redis returns. maxWait <= 0 tries once.
//
// With this package's limiters, the waiters of one process queue per key in
// arrival order and only the head one polls, so a process adds at most one
// poller per key however many goroutines wait; a release in the process wakes
// it at once.
func Wait(ctx context.Context, l Limiter, key, leaseID string, maxWait time.Duration) (Lease, error) {
	start := time.Now()
	w := waiter{l: l, key: key, leaseID: leaseID, deadline: start.Add(maxWait)}
	if h, ok := l.(waitHooks); ok {
		w.qs = h.waitQueues()
		w.q = w.qs.join(key)
		defer w.qs.leave(key, w.q)
	}
	lease, outcome, err := w.wait(ctx)
	if h, ok := l.(waitHooks); ok {
		h.observeWait(context.WithoutCancel(ctx), key, time.Since(start), outcome)
	}
	return lease, err
}

type waiter struct {
	l            Limiter
	key, leaseID string
	deadline     time.Time
	qs           *waitQueues
	q            *waitQueue // nil when l is not one of ours
	last         error      // last denial or failure; nil means try now
	backoff      time.Duration
}

// wait returns the lease or error and the outcome for metrics.
func (w *waiter) wait(ctx context.Context) (Lease, string, error) {
	// Fast path: nobody of ours is waiting, so trying first overtakes no one.
	if w.q == nil || !w.qs.anyWaiting(w.q) {
		lease, err := w.l.Acquire(ctx, w.key, w.leaseID)
		if err == nil {
			return lease, "granted", nil
		}
		if !w.retryable(err) {
			return Lease{}, outcomeOf(ctx), err
		}
		if w.hopeless() {
			return Lease{}, "snoozed", w.snooze(w.hint())
		}
	}

	if w.q != nil {
		w.qs.startWaiting(w.q)
		defer w.qs.stopWaiting(w.q)
		queued, err := w.takeTurn(ctx)
		if err != nil {
			if _, ok := err.(*engine.SnoozeError); ok {
				return Lease{}, "snoozed", err
			}
			return Lease{}, "canceled", err
		}
		defer func() { <-w.q.turn }()
		if queued {
			// The one before us just got a lease or gave up; either way
			// there may be room now, so try before sleeping.
			w.last = nil
		}
	}

	for {
		if w.last == nil {
			lease, err := w.l.Acquire(ctx, w.key, w.leaseID)
			if err == nil {
				return lease, "granted", nil
			}
			if !w.retryable(err) {
				return Lease{}, outcomeOf(ctx), err
			}
		}
		hint := w.hint()
		if w.q != nil {
			w.qs.setHint(w.q, hint)
		}
		if w.hopeless() {
			return Lease{}, "snoozed", w.snooze(hint)
		}
		if err := w.sleep(ctx, hint); err != nil {
			return Lease{}, "canceled", err
		}
		w.last = nil
	}
}

// takeTurn blocks until this goroutine is the key's poller, and reports
// whether it had to wait for another one.
func (w *waiter) takeTurn(ctx context.Context) (queued bool, err error) {
	select {
	case w.q.turn <- struct{}{}:
		return false, nil
	default:
	}
	timer := time.NewTimer(time.Until(w.deadline))
	defer timer.Stop()
	select {
	case w.q.turn <- struct{}{}:
		return true, nil
	case <-timer.C:
		if w.last == nil {
			hint := w.qs.getHint(w.q)
			if hint <= 0 {
				hint = queuedRetryAfter
			}
			return true, newSnooze(w.key, hint, errQueued)
		}
		return true, w.snooze(w.hint())
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// sleep waits about d (a little more, at random, so that pollers of several
// processes do not wake in step), or until a local release.
func (w *waiter) sleep(ctx context.Context, d time.Duration) error {
	d = max(d, minSleep)
	// Small: with Burst 1, every microsecond of lateness is rate not used.
	d += rand.N(d/20 + 200*time.Microsecond)
	if left := time.Until(w.deadline); d > left {
		d = max(left, 0)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	var kick chan struct{}
	if w.q != nil {
		kick = w.q.kick
	}
	select {
	case <-timer.C:
	case <-kick:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// retryable records err as the latest reason to wait and reports whether
// waiting can help.
func (w *waiter) retryable(err error) bool {
	var denied *DeniedError
	var unavailable *UnavailableError
	switch {
	case errors.As(err, &denied):
		w.last = err
		return true
	case errors.As(err, &unavailable):
		w.last = err
		if w.backoff == 0 {
			w.backoff = unavailableFirst
		} else {
			w.backoff = min(2*w.backoff, unavailableMax)
		}
		return true
	}
	return false
}

// hopeless reports whether waiting any longer cannot help: the deadline has
// passed, or the latest denial names a time (rate, recovery) beyond it. A
// concurrency denial's or an outage's hint is only a polling pace, so those
// are tried once more at the deadline.
func (w *waiter) hopeless() bool {
	left := time.Until(w.deadline)
	if left <= 0 {
		return true
	}
	var denied *DeniedError
	return errors.As(w.last, &denied) && denied.Reason != ReasonConcurrency && denied.RetryAfter > left
}

// hint is how long to wait after the latest denial or failure.
func (w *waiter) hint() time.Duration {
	var denied *DeniedError
	if errors.As(w.last, &denied) {
		return denied.RetryAfter
	}
	return w.backoff
}

func (w *waiter) snooze(retryAfter time.Duration) *engine.SnoozeError {
	return newSnooze(w.key, retryAfter, w.last)
}

func outcomeOf(ctx context.Context) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	return "error"
}
