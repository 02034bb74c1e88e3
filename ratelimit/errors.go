package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

// ErrLeaseLost is returned (wrapped) by Renew when the lease ran out before
// the renewal and its slot has been given to another caller since: the call
// it guarded must stop, or the key would hold more than its Concurrency.
// Hold cancels the call's context with this cause.
var ErrLeaseLost = errors.New("ratelimit: lease lost: it expired and its slot was taken")

// Reason says which limit denied an acquisition.
type Reason string

const (
	// ReasonConcurrency: every slot is taken.
	ReasonConcurrency Reason = "concurrency"
	// ReasonRate: the key has used its rate and burst.
	ReasonRate Reason = "rate"
	// ReasonRecovering: the limiter found the key's state missing (Redis
	// restarted empty or was flushed) and is waiting for the holders of live
	// leases to renew them before it counts new ones. See the package doc.
	ReasonRecovering Reason = "recovering"
)

// DeniedError is returned by Acquire when a limit leaves no room.
type DeniedError struct {
	Key    string
	Reason Reason
	// RetryAfter is when trying again may succeed. For ReasonRate and
	// ReasonRecovering it is exact; for ReasonConcurrency it is a polling
	// interval, because another worker may release a slot at any moment.
	RetryAfter time.Duration
	// InUse is the number of leases held when the call was denied.
	InUse int
	// Limits are the key's limits at the time, defaults filled in.
	Limits Limits
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("ratelimit: key %q denied by %s limit (%d in use), retry after %s",
		e.Key, e.Reason, e.InUse, e.RetryAfter)
}

// UnavailableError is returned when the limiter cannot reach a decision
// because its store (Redis) failed. Nothing was granted: limits fail closed.
type UnavailableError struct {
	// Op is the operation that failed: "acquire", "renew" or "release".
	Op  string
	Key string
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ratelimit: %s %q: limiter unavailable: %v", e.Op, e.Key, e.Err)
}

// Unwrap returns the store's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// SnoozeError is returned by Wait and Hold when no lease came within the
// allowed wait. The caller should give the work back (re-queue it without
// spending a retry attempt) and try again after RetryAfter.
type SnoozeError struct {
	Key        string
	RetryAfter time.Duration
	// Err is the last denial (*DeniedError) or failure (*UnavailableError).
	Err error
}

func (e *SnoozeError) Error() string {
	return fmt.Sprintf("ratelimit: key %q: no lease within the wait, retry after %s: %v", e.Key, e.RetryAfter, e.Err)
}

// Unwrap returns the last denial or failure.
func (e *SnoozeError) Unwrap() error { return e.Err }

// leaseLost is the error of a refused renewal.
func leaseLost(lease Lease, inUse int, lim Limits) error {
	return fmt.Errorf("ratelimit: key %q, lease %q (%d of %d slots in use): %w",
		lease.Key, lease.ID, inUse, lim.Concurrency, ErrLeaseLost)
}
