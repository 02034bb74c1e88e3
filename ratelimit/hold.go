package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Renewal timing for Hold. A lease is renewed every third of its TTL, so two
// renewals in a row can fail before it runs out; after a failure it is
// retried sooner, so that once Redis is back the lease is recorded again well
// inside the recovery window.
const (
	renewFraction      = 3
	renewRetryFraction = 10
	renewRetryMin      = 10 * time.Millisecond
	renewRetryMax      = time.Second
)

// closer is implemented by this package's limiters: the channel is closed
// when the limiter is, and a Held renewing through it stops then.
type closer interface{ closing() <-chan struct{} }

// closeSignal is a limiter's closing channel, closed once.
type closeSignal struct {
	once sync.Once
	ch   chan struct{}
}

func newCloseSignal() closeSignal { return closeSignal{ch: make(chan struct{})} }

func (c *closeSignal) close() { c.once.Do(func() { close(c.ch) }) }

// Held is a lease that Hold keeps renewed until Release, or until its
// limiter is closed.
type Held struct {
	l      Limiter
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	lease Lease
	lost  error
}

// Hold waits for a lease like Wait, then renews it in the background until
// Release, so a call may run longer than the lease TTL while a crashed
// process still gives its slot back within one TTL. It returns the same
// errors as Wait. Every Held must be released; closing one of this
// package's limiters also ends the renewals of the Helds taken through it
// (they are lost), so that none outlives its limiter.
//
// Run the call under Held.Context: it is cancelled, with a cause wrapping
// ErrLeaseLost, when the lease is lost. That happens when a renewal is
// refused (the process was paused past the TTL and the slot went to another
// caller), or when no renewal succeeded for a whole TTL (Redis unreachable
// from here while others may reach it): either way the slot may now be
// someone else's, and a call that went on would put the key over its
// Concurrency. It also happens when the limiter is closed: nothing renews
// the lease after that. A lost lease is not renewed again.
//
// This is the whole of what an activity interceptor needs: Hold before the
// call, Release after it, and on an *engine.SnoozeError give the activity
// back to the queue for its After without spending a retry attempt (return
// it from the activity, as ActivityInterceptor does).
func Hold(ctx context.Context, l Limiter, key, leaseID string, maxWait time.Duration) (*Held, error) {
	lease, err := Wait(ctx, l, key, leaseID, maxWait)
	if err != nil {
		return nil, err
	}
	// The grant happened a round trip ago at most: its lease runs out no
	// sooner than a TTL from now, less that round trip, which is noise
	// against a TTL.
	deadline := time.Now().Add(leaseTTL(lease))
	cctx, cancel := context.WithCancelCause(ctx)
	h := &Held{l: l, lease: lease, ctx: cctx, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	// Renewals outlive a cancelled ctx on purpose: the call may still be
	// finishing, and its slot must stay counted until Release.
	go h.renewLoop(context.WithoutCancel(ctx), deadline)
	return h, nil
}

// Context is the context to run the guarded call under: Hold's ctx, also
// cancelled when the lease is lost (with context.Cause wrapping
// ErrLeaseLost) and at Release.
func (h *Held) Context() context.Context { return h.ctx }

// Lost returns why the lease was lost (wrapping ErrLeaseLost), or nil while
// it is held.
func (h *Held) Lost() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lost
}

// Lease returns the lease as last renewed.
func (h *Held) Lease() Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease
}

// Release stops renewing, gives the slot back and cancels Context. It waits
// for a renewal in flight to finish first, so a late renewal cannot record
// the lease again after it was released. Calls after the first return nil.
func (h *Held) Release(ctx context.Context) error {
	first := false
	h.once.Do(func() {
		first = true
		close(h.stop)
	})
	if !first {
		return nil
	}
	<-h.done
	h.cancel(context.Canceled)
	return h.l.Release(ctx, h.Lease())
}

// renewLoop renews the lease until Release or until it is lost. deadline is
// the local time by which the lease may run out unless renewed.
func (h *Held) renewLoop(ctx context.Context, deadline time.Time) {
	defer close(h.done)
	lease := h.Lease()
	every := renewEvery(lease)
	timer := time.NewTimer(every)
	defer timer.Stop()
	var closing <-chan struct{} // nil (never ready) for a limiter from elsewhere
	if c, ok := h.l.(closer); ok {
		closing = c.closing()
	}
	for {
		select {
		case <-h.stop:
			return
		case <-closing:
			h.lose(fmt.Errorf("ratelimit: key %q, lease %q: the limiter was closed, so nothing renews the lease: %w",
				lease.Key, lease.ID, ErrLeaseLost))
			return
		case <-timer.C:
		}
		sent := time.Now()
		if !sent.Before(deadline) {
			// Renewals failed for a whole TTL (or the process was paused
			// that long): the slot may be someone else's by now.
			h.lose(fmt.Errorf("ratelimit: key %q, lease %q: not renewed within its TTL of %s: %w",
				lease.Key, lease.ID, lease.TTL, ErrLeaseLost))
			return
		}
		rctx, cancel := context.WithDeadline(ctx, minTime(sent.Add(every), deadline))
		renewed, err := h.l.Renew(rctx, lease)
		cancel()
		if errors.Is(err, ErrLeaseLost) {
			h.lose(err)
			return
		}
		if err != nil {
			// The lease stays ours until it expires, and a later renewal
			// records it again if it did; keep trying, sooner than usual,
			// and look again at the deadline.
			retry := min(max(every*renewFraction/renewRetryFraction, renewRetryMin), renewRetryMax)
			timer.Reset(min(retry, time.Until(deadline)))
			continue
		}
		lease = renewed
		deadline = sent.Add(leaseTTL(renewed))
		h.mu.Lock()
		h.lease = renewed
		h.mu.Unlock()
		// The key's LeaseTTL may have changed at run time.
		every = renewEvery(renewed)
		timer.Reset(every)
	}
}

// lose records why the lease was lost and stops the call.
func (h *Held) lose(err error) {
	h.mu.Lock()
	h.lost = err
	h.mu.Unlock()
	h.cancel(err)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// leaseTTL is lease's TTL. A Limiter from elsewhere may leave it unset; then
// the default TTL is assumed, rather than renewing in a spin or losing the
// lease at once.
func leaseTTL(lease Lease) time.Duration {
	if lease.TTL <= 0 {
		return DefaultLeaseTTL
	}
	return lease.TTL
}

// renewEvery is the renewal period for lease.
func renewEvery(lease Lease) time.Duration {
	return leaseTTL(lease) / renewFraction
}
