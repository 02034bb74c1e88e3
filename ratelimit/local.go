package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// LocalConfig configures a LocalLimiter. The zero value of each field other
// than Limits means its documented default.
type LocalConfig struct {
	// Limits gives each key's limits, consulted on every call. Required.
	Limits LimitsSource
	// PollInterval is the retry-after given with a concurrency denial when no
	// lease expires sooner. Waiters in this process are woken by releases
	// anyway; the interval only matters to callers of Acquire. Default 20ms.
	PollInterval time.Duration
	// Clock supplies the time. Default: the monotonic clock, so that a wall
	// clock step does not expire or stretch leases.
	Clock Clock
	// MeterProvider receives the limiter's metrics. Default: the otel global.
	MeterProvider metric.MeterProvider
}

// Validate reports the first field that makes no sense, by name.
func (c LocalConfig) Validate() error {
	switch {
	case c.Limits == nil:
		return errors.New("ratelimit: LocalConfig.Limits is required")
	case c.PollInterval < 0:
		return fmt.Errorf("ratelimit: LocalConfig.PollInterval must be >= 0, got %s", c.PollInterval)
	}
	return nil
}

// LocalLimiter holds keys to their limits within one process, with the same
// semantics as RedisLimiter apart from data loss, which it cannot suffer. It
// is the embedded default when no Redis is configured. It knows nothing of
// other processes: two workers with a LocalLimiter each allow twice the
// limit. Use it for a single process, or for limits that are per worker by
// design (see NewWorkerLimiter).
type LocalLimiter struct {
	cfg     LocalConfig
	metrics *metrics
	waits   waitQueues
	closed  closeSignal
	base    time.Time // monotonic reference when cfg.Clock is nil

	mu   sync.Mutex
	keys map[string]*localKey
}

// localKey is one key's state, the in-memory twin of the Redis keys.
type localKey struct {
	leases map[string]int64 // lease ID -> expiry, microseconds
	tat    float64          // GCRA theoretical arrival time, microseconds
}

var _ Limiter = (*LocalLimiter)(nil)

// NewLocalLimiter returns an in-process limiter.
func NewLocalLimiter(cfg LocalConfig) (*LocalLimiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultPollInterval)
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	return &LocalLimiter{cfg: cfg, metrics: m, closed: newCloseSignal(), base: time.Now(), keys: make(map[string]*localKey)}, nil
}

// Close unregisters the limiter's metrics callback and stops renewing the
// leases Hold keeps through it: each such Held is lost (its Context is
// cancelled with a cause wrapping ErrLeaseLost), since nothing renews it
// any more.
func (l *LocalLimiter) Close() error {
	l.closed.close()
	return l.metrics.close()
}

func (l *LocalLimiter) closing() <-chan struct{} { return l.closed.ch }

// Acquire implements Limiter.
func (l *LocalLimiter) Acquire(ctx context.Context, key, leaseID string) (Lease, error) {
	if err := checkArgs(key, leaseID); err != nil {
		return Lease{}, err
	}
	lim, err := limitsFor(l.cfg.Limits, key)
	if err != nil {
		l.metrics.acquired(ctx, key, "error")
		return Lease{}, err
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	r := l.acquire(key, leaseID, lim)
	l.metrics.expiredLeases(ctx, key, r.expired)
	l.metrics.gauge(key, r.inUse, lim.Concurrency)
	if r.denied != nil {
		l.metrics.acquired(ctx, key, deniedOutcome(r.denied.Reason))
		return Lease{}, r.denied
	}
	outcome := "granted"
	if r.held {
		outcome = "held"
	}
	l.metrics.acquired(ctx, key, outcome)
	return r.lease, nil
}

// localResult is what one local acquisition decided.
type localResult struct {
	lease   Lease
	denied  *DeniedError
	held    bool // the lease ID already held a slot
	inUse   int
	expired int64
}

func (l *LocalLimiter) acquire(key, leaseID string, lim Limits) localResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.nowMicros()
	k := l.key(key)
	expired := k.expire(now)
	expires := now + lim.LeaseTTL.Microseconds()
	lease := Lease{Key: key, ID: leaseID, Expires: l.toTime(expires), TTL: lim.LeaseTTL}
	if _, ok := k.leases[leaseID]; ok {
		k.leases[leaseID] = expires
		return localResult{lease: lease, held: true, inUse: len(k.leases), expired: expired}
	}
	inUse := len(k.leases)
	if lim.Concurrency > 0 && inUse >= lim.Concurrency {
		first := int64(math.MaxInt64)
		for _, e := range k.leases {
			first = min(first, e)
		}
		retry := min(time.Duration(first-now)*time.Microsecond, l.cfg.PollInterval)
		return localResult{inUse: inUse, expired: expired,
			denied: &DeniedError{Key: key, Reason: ReasonConcurrency, RetryAfter: retry, InUse: inUse, Limits: lim}}
	}
	if lim.Rate > 0 {
		// The same GCRA arithmetic as acquire.lua, in the same order, so both
		// limiters make the same decisions.
		nowf := float64(now)
		interval := 1e6 / lim.Rate
		tolerance := float64(lim.Burst) * interval
		tat := max(k.tat, nowf)
		if tat > nowf+tolerance {
			// After a rate change: cap the old debt, and keep the cap.
			tat = nowf + tolerance
			k.tat = tat
		}
		newTAT := tat + interval
		if newTAT-nowf > tolerance {
			retry := time.Duration(math.Ceil(newTAT-tolerance-nowf)) * time.Microsecond
			return localResult{inUse: inUse, expired: expired,
				denied: &DeniedError{Key: key, Reason: ReasonRate, RetryAfter: retry, InUse: inUse, Limits: lim}}
		}
		k.tat = newTAT
	}
	k.leases[leaseID] = expires
	return localResult{lease: lease, inUse: inUse + 1, expired: expired}
}

// Renew implements Limiter.
func (l *LocalLimiter) Renew(ctx context.Context, lease Lease) (Lease, error) {
	if err := checkArgs(lease.Key, lease.ID); err != nil {
		return Lease{}, err
	}
	lim, err := limitsFor(l.cfg.Limits, lease.Key)
	if err != nil {
		return Lease{}, err
	}
	l.mu.Lock()
	now := l.nowMicros()
	k := l.key(lease.Key)
	expired := k.expire(now)
	_, held := k.leases[lease.ID]
	inUse := len(k.leases)
	// As in renew.lua: a lease that ran out is recorded again only if its
	// slot was not given away meanwhile.
	refused := !held && lim.Concurrency > 0 && inUse >= lim.Concurrency
	expires := now + lim.LeaseTTL.Microseconds()
	if !refused {
		k.leases[lease.ID] = expires
		inUse = len(k.leases)
	}
	l.mu.Unlock()

	l.metrics.expiredLeases(ctx, lease.Key, expired)
	l.metrics.gauge(lease.Key, inUse, lim.Concurrency)
	if refused {
		return Lease{}, leaseLost(lease, inUse, lim)
	}
	if !held {
		l.metrics.restoredLease(ctx, lease.Key)
	}
	lease.Expires = l.toTime(expires)
	lease.TTL = lim.LeaseTTL
	return lease, nil
}

// Release implements Limiter.
func (l *LocalLimiter) Release(ctx context.Context, lease Lease) error {
	if err := checkArgs(lease.Key, lease.ID); err != nil {
		return err
	}
	l.mu.Lock()
	now := l.nowMicros()
	k := l.key(lease.Key)
	expired := k.expire(now)
	_, held := k.leases[lease.ID]
	delete(k.leases, lease.ID)
	inUse := len(k.leases)
	if inUse == 0 && k.tat <= float64(now) {
		// Nothing left that a fresh key would not also say.
		delete(l.keys, lease.Key)
	}
	l.mu.Unlock()

	l.metrics.expiredLeases(ctx, lease.Key, expired)
	l.metrics.gauge(lease.Key, inUse, -1)
	if held {
		l.waits.released(lease.Key)
	}
	return nil
}

func (l *LocalLimiter) key(key string) *localKey {
	k := l.keys[key]
	if k == nil {
		k = &localKey{leases: make(map[string]int64)}
		l.keys[key] = k
	}
	return k
}

// expire drops leases whose expiry has passed and returns how many.
func (k *localKey) expire(now int64) int64 {
	var n int64
	for id, e := range k.leases {
		if e <= now {
			delete(k.leases, id)
			n++
		}
	}
	return n
}

func (l *LocalLimiter) nowMicros() int64 {
	if l.cfg.Clock != nil {
		return l.cfg.Clock.Now().UnixMicro()
	}
	return l.base.UnixMicro() + time.Since(l.base).Microseconds()
}

func (l *LocalLimiter) toTime(us int64) time.Time {
	if l.cfg.Clock != nil {
		return time.UnixMicro(us)
	}
	// Keep the monotonic reading so comparisons with time.Now are immune to
	// wall clock steps.
	return l.base.Add(time.Duration(us-l.base.UnixMicro()) * time.Microsecond)
}

func (l *LocalLimiter) waitQueues() *waitQueues { return &l.waits }

func (l *LocalLimiter) observeWait(ctx context.Context, key string, d time.Duration, outcome string) {
	l.metrics.waited(ctx, key, d, outcome)
}
