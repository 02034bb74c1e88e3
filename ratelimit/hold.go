package ratelimit

import (
	"context"
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

// Held is a lease that Hold keeps renewed until Release.
type Held struct {
	l    Limiter
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	lease Lease
}

// Hold waits for a lease like Wait, then renews it in the background until
// Release, so a call may run longer than the lease TTL while a crashed
// process still gives its slot back within one TTL. It returns the same
// errors as Wait.
//
// This is the whole of what an activity interceptor needs: Hold before the
// call, Release after it, and on a *SnoozeError give the activity back to the
// queue for SnoozeError.RetryAfter without spending a retry attempt.
func Hold(ctx context.Context, l Limiter, key, leaseID string, maxWait time.Duration) (*Held, error) {
	lease, err := Wait(ctx, l, key, leaseID, maxWait)
	if err != nil {
		return nil, err
	}
	h := &Held{l: l, lease: lease, stop: make(chan struct{}), done: make(chan struct{})}
	// Renewals outlive a cancelled ctx on purpose: the call may still be
	// finishing, and its slot must stay counted until Release.
	go h.renewLoop(context.WithoutCancel(ctx))
	return h, nil
}

// Lease returns the lease as last renewed.
func (h *Held) Lease() Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease
}

// Release stops renewing and gives the slot back. It waits for a renewal in
// flight to finish first, so a late renewal cannot record the lease again
// after it was released. Calls after the first return nil.
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
	return h.l.Release(ctx, h.Lease())
}

func (h *Held) renewLoop(ctx context.Context) {
	defer close(h.done)
	lease := h.Lease()
	every := renewEvery(lease)
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-timer.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		renewed, err := h.l.Renew(rctx, lease)
		cancel()
		if err != nil {
			// The lease stays ours until it expires, and a later renewal
			// records it again if it did; keep trying, sooner than usual.
			timer.Reset(min(max(every*renewFraction/renewRetryFraction, renewRetryMin), renewRetryMax))
			continue
		}
		lease = renewed
		h.mu.Lock()
		h.lease = renewed
		h.mu.Unlock()
		// The key's LeaseTTL may have changed at run time.
		every = renewEvery(renewed)
		timer.Reset(every)
	}
}

// renewEvery is the renewal period for lease. A Limiter from elsewhere may
// leave TTL unset; then the default TTL is assumed rather than spinning.
func renewEvery(lease Lease) time.Duration {
	ttl := lease.TTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return ttl / renewFraction
}
