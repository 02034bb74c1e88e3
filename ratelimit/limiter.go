package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Lease is a held concurrency slot. It is a value: hand it back to the limiter
// that granted it to renew or release it.
type Lease struct {
	// Key is the limiter key the lease counts against.
	Key string
	// ID names the lease. Acquiring again with the same ID returns the same
	// lease, so a caller that retries after an ambiguous failure does not take
	// a second slot.
	ID string
	// Expires is when the lease runs out unless renewed, by the limiter's clock
	// (for RedisLimiter, Redis's clock unless a Clock is configured).
	Expires time.Time
	// TTL is the lease lifetime the key had when the lease was granted or last
	// renewed; renew well within it (Hold renews every third).
	TTL time.Duration
}

// Limiter holds keys to their Limits. Implementations are safe for concurrent
// use.
type Limiter interface {
	// Acquire tries once, without waiting, to take a slot for key under
	// leaseID. A denial is a *DeniedError that says why and when to retry; a
	// limiter that cannot decide (Redis unreachable) returns an
	// *UnavailableError and grants nothing. Use Wait or Hold to wait.
	Acquire(ctx context.Context, key, leaseID string) (Lease, error)
	// Renew extends the lease by the key's current LeaseTTL. A lease that is
	// no longer recorded (it expired, or Redis lost its data) is recorded
	// again if the key has a free slot: the call it guards is still running,
	// so counting it is the truth. If its slot went to another caller
	// meanwhile, Renew records nothing and returns an error wrapping
	// ErrLeaseLost: the call must stop, or the key would hold more calls than
	// its Concurrency.
	Renew(ctx context.Context, lease Lease) (Lease, error)
	// Release gives the slot back. Releasing a lease that is not held is not
	// an error.
	Release(ctx context.Context, lease Lease) error
}

// Clock supplies the current time. Tests inject one to move time by hand.
type Clock interface {
	Now() time.Time
}

// checkArgs rejects the arguments every limiter refuses.
func checkArgs(key, leaseID string) error {
	if key == "" {
		return errors.New("ratelimit: empty key")
	}
	if leaseID == "" {
		return errors.New("ratelimit: empty lease ID")
	}
	if leaseID[0] == 0 {
		// Such names are reserved for the state's own metadata.
		return errors.New("ratelimit: lease ID must not start with a NUL byte")
	}
	return nil
}
