package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// attemptCtx is the context of an activity attempt without a heartbeat
// timeout: the run's context (base) with the attempt's activityState as a
// value and the attempt's deadline (the earlier end of its start-to-close
// and schedule-to-close timeouts), cancelled when the attempt ends.
//
// What makes a context end by itself (a timer, a Done channel, a
// registration with the run's context) is made only when someone asks for
// Done: the activity or an interceptor watching it, a context derived from
// it, a deadline that passed when its error or cause is asked for. Most
// activities never ask: at one workflow at a time the two contexts, the
// timer and the registration each attempt made were about 4% of the Go CPU
// per workflow (bench -c 1 -cpuprofile). An activity that does not watch
// its context cannot be interrupted by either, and one that does sees the
// same contexts as before, made at its first look.
type attemptCtx struct {
	base     context.Context
	st       activityState
	deadline time.Time   // zero: none
	kind     TimeoutKind // the deadline's: its cause is a *TimeoutError of this kind

	mu    sync.Mutex // taken to make armed, and by end
	armed atomic.Pointer[armedAttempt]
	ended atomic.Bool // the attempt ended (end)
}

// armedAttempt is what attemptCtx.arm made: base with the deadline, and
// its cancel function.
type armedAttempt struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// newAttemptCtx returns an attempt's context with deadline (zero: none),
// past which it ends with a *TimeoutError of kind.
func newAttemptCtx(base context.Context, deadline time.Time, kind TimeoutKind) *attemptCtx {
	return &attemptCtx{base: base, deadline: deadline, kind: kind}
}

// arm makes the context that ends by itself, once.
func (c *attemptCtx) arm() *armedAttempt {
	if a := c.armed.Load(); a != nil {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a
	}
	a := &armedAttempt{}
	if c.deadline.IsZero() {
		a.ctx, a.cancel = context.WithCancel(c.base)
	} else {
		a.ctx, a.cancel = context.WithDeadlineCause(c.base, c.deadline, &TimeoutError{Kind: c.kind})
	}
	if c.ended.Load() {
		a.cancel()
	}
	c.armed.Store(a)
	return a
}

// end ends the attempt: its context is cancelled, if it was made.
func (c *attemptCtx) end() {
	c.mu.Lock()
	c.ended.Store(true)
	a := c.armed.Load()
	c.mu.Unlock()
	if a != nil {
		a.cancel()
	}
}

// overdue reports whether the deadline has passed.
func (c *attemptCtx) overdue() bool {
	return !c.deadline.IsZero() && !time.Now().Before(c.deadline)
}

// Deadline implements context.Context.
func (c *attemptCtx) Deadline() (time.Time, bool) {
	d, ok := c.base.Deadline()
	if !c.deadline.IsZero() && (!ok || c.deadline.Before(d)) {
		return c.deadline, true
	}
	return d, ok
}

// Done implements context.Context.
func (c *attemptCtx) Done() <-chan struct{} { return c.arm().ctx.Done() }

// Err implements context.Context.
func (c *attemptCtx) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if c.overdue() {
		return c.arm().ctx.Err()
	}
	if err := c.base.Err(); err != nil {
		return err
	}
	if c.ended.Load() {
		return context.Canceled
	}
	return nil
}

// Value implements context.Context. Until the context is made, its values
// are base's: context.Cause then reads base's cause, as it would through
// the made context, unless the deadline has passed or the attempt ended,
// which make it (the cause is then the deadline's, or Canceled).
func (c *attemptCtx) Value(key any) any {
	if key == (activityCtxKey{}) {
		return &c.st
	}
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if c.overdue() || c.ended.Load() {
		return c.arm().ctx.Value(key)
	}
	return c.base.Value(key)
}
