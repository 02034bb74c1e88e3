package ratelimit

import (
	"errors"
	"fmt"
	"github.com/graftdev/graft/engine"
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
	// ReasonConcurrency means every slot is taken.
	ReasonConcurrency Reason = "concurrency"
	// ReasonRate means the key has used its rate and burst.
	ReasonRate Reason = "rate"
	// ReasonRecovering means the limiter found the key's state missing (Redis
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

// newSnooze returns the snooze Wait and Hold give when no lease came within
// the allowed wait: an *engine.SnoozeError whose Err is why (the last
// *DeniedError or *UnavailableError, or the process's own queue) and whose
// Reason says it briefly, key included. The caller gives the work back
// (re-queues it without spending a retry attempt) and tries again after
// After; the ActivityInterceptor returns it to the engine, which does that.
func newSnooze(key string, after time.Duration, err error) *engine.SnoozeError {
	return &engine.SnoozeError{After: after, Reason: snoozeReason(key, err), Err: err}
}

// snoozeReason says briefly why an attempt waits, for the engine's record.
func snoozeReason(key string, err error) string {
	var denied *DeniedError
	var unavailable *UnavailableError
	why := "no slot within the wait"
	switch {
	case errors.As(err, &denied):
		why = fmt.Sprintf("%s limit (%d in use)", denied.Reason, denied.InUse)
	case errors.As(err, &unavailable):
		why = "limiter unavailable: " + unavailable.Err.Error()
	case errors.Is(err, errTooManyWaiters):
		why = "too many attempts of this process waiting"
	case errors.Is(err, errQueued):
		why = "queued behind other attempts of this process"
	case errors.Is(err, ErrLeaseLost):
		why = "lease lost during the call: " + err.Error()
	}
	return fmt.Sprintf("ratelimit: key %q: %s", key, why)
}

// leaseLost is the error of a refused renewal.
func leaseLost(lease Lease, inUse int, lim Limits) error {
	return fmt.Errorf("ratelimit: key %q, lease %q (%d of %d slots in use): %w",
		lease.Key, lease.ID, inUse, lim.Concurrency, ErrLeaseLost)
}
