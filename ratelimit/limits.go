package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// DefaultLeaseTTL is the lease lifetime used when Limits.LeaseTTL is zero. It
// bounds how long a slot held by a crashed worker stays taken, while leaving
// room for a renewal (every third of it) to be late without losing the lease.
const DefaultLeaseTTL = 30 * time.Second

// Limits is what one key (a provider, or a provider and an account) allows.
// The zero value allows everything; each limit is off until set.
type Limits struct {
	// Concurrency is the number of leases that may be held at once across all
	// workers. Zero means no concurrency limit.
	Concurrency int
	// Rate is the number of new leases per second. Zero means no rate limit.
	Rate float64
	// Burst is how many leases may be granted at once on top of the steady
	// rate: in any window of t seconds at most Burst + Rate*t leases are
	// granted. Zero means 1, so that grants are spread evenly; it is not
	// defaulted to Rate, which would let almost twice the rate through within
	// one second (a full bucket, then a bucket's worth of refill).
	Burst int
	// LeaseTTL is how long a lease lives without renewal. A worker that dies
	// while holding a lease gives its slot back when the lease runs out; a
	// long call renews its lease before then. Zero means DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// Validate reports the first field that makes no sense, by name.
func (l Limits) Validate() error {
	switch {
	case l.Concurrency < 0:
		return fmt.Errorf("ratelimit: Limits.Concurrency must be >= 0, got %d", l.Concurrency)
	case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Rate < 0:
		return fmt.Errorf("ratelimit: Limits.Rate must be a finite number >= 0, got %v", l.Rate)
	case l.Burst < 0:
		return fmt.Errorf("ratelimit: Limits.Burst must be >= 0, got %d", l.Burst)
	case l.LeaseTTL < 0:
		return fmt.Errorf("ratelimit: Limits.LeaseTTL must be >= 0, got %s", l.LeaseTTL)
	case l.LeaseTTL > 0 && l.LeaseTTL < time.Millisecond:
		// Redis expiries have millisecond resolution.
		return fmt.Errorf("ratelimit: Limits.LeaseTTL must be at least 1ms, got %s", l.LeaseTTL)
	}
	return nil
}

// withDefaults fills the zero fields that have defaults.
func (l Limits) withDefaults() Limits {
	if l.Burst == 0 {
		l.Burst = 1
	}
	if l.LeaseTTL == 0 {
		l.LeaseTTL = DefaultLeaseTTL
	}
	return l
}

// LimitsSource gives the limits for a key. Limiters consult it on every call,
// so a source whose answers change (a reloaded configuration file, a table
// edited by an operator) changes the limits without a restart. It sits on the
// hot path and must answer from memory. An error (or invalid Limits) fails the
// call without granting anything, and Wait returns it at once.
type LimitsSource interface {
	Limits(key string) (Limits, error)
}

// LimitsFunc adapts a function to LimitsSource.
type LimitsFunc func(key string) (Limits, error)

// Limits calls f.
func (f LimitsFunc) Limits(key string) (Limits, error) { return f(key) }

// StaticLimits returns a source that gives every key the same limits.
func StaticLimits(l Limits) LimitsSource {
	return LimitsFunc(func(string) (Limits, error) { return l, nil })
}

// ErrNoLimits is returned by a LimitsTable for a key it does not know when it
// has no default. Calls for such a key are denied rather than let through
// unlimited, because a typo in a provider name should not lift its limits.
var ErrNoLimits = errors.New("ratelimit: no limits configured for key")

// LimitsTable is a LimitsSource that can be changed while it is in use. The
// zero value is empty and has no default. It is safe for concurrent use.
type LimitsTable struct {
	mu         sync.RWMutex
	byKey      map[string]Limits
	def        Limits
	hasDefault bool
}

// Set sets the limits for key.
func (t *LimitsTable) Set(key string, l Limits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byKey == nil {
		t.byKey = make(map[string]Limits)
	}
	t.byKey[key] = l
}

// Delete forgets key, which then falls back to the default.
func (t *LimitsTable) Delete(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byKey, key)
}

// SetDefault sets the limits for keys that have none of their own.
func (t *LimitsTable) SetDefault(l Limits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.def, t.hasDefault = l, true
}

// Limits returns the limits for key, the default, or ErrNoLimits.
func (t *LimitsTable) Limits(key string) (Limits, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if l, ok := t.byKey[key]; ok {
		return l, nil
	}
	if t.hasDefault {
		return t.def, nil
	}
	return Limits{}, fmt.Errorf("%w: %q", ErrNoLimits, key)
}

// limitsFor asks src for key's limits, checks them and fills defaults.
func limitsFor(src LimitsSource, key string) (Limits, error) {
	l, err := src.Limits(key)
	if err != nil {
		return Limits{}, fmt.Errorf("ratelimit: limits for %q: %w", key, err)
	}
	if err := l.Validate(); err != nil {
		return Limits{}, fmt.Errorf("%w (key %q)", err, key)
	}
	return l.withDefaults(), nil
}
