package engine

import (
	"log/slog"
	"time"
)

// Context is a workflow's context. It is not a context.Context: everything a
// workflow observes through it is recorded or derived from the record, so a
// replay sees the same values. Err returns a *CanceledError once the workflow
// has observed its cancellation.
type Context interface {
	// Value returns the value stored under key by WithValue, or nil.
	Value(key any) any
	// Err is nil until the workflow observes a cancellation, and always nil
	// for a disconnected context.
	Err() error
	state() *runState
	isDisconnected() bool
}

type wfContext struct {
	s      *runState
	parent *wfContext
	key    any
	val    any
	disc   bool
}

func (c *wfContext) Value(key any) any {
	for x := c; x != nil; x = x.parent {
		if x.key != nil && x.key == key {
			return x.val
		}
	}
	return nil
}

func (c *wfContext) Err() error {
	if c.disc {
		return nil
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.cancelObserved {
		return &CanceledError{Reason: c.s.cancelReason}
	}
	return nil
}

func (c *wfContext) state() *runState     { return c.s }
func (c *wfContext) isDisconnected() bool { return c.disc }

// WithValue returns a child context carrying val under key.
func WithValue(ctx Context, key, val any) Context {
	p := ctx.(*wfContext)
	return &wfContext{s: p.s, parent: p, key: key, val: val, disc: p.disc}
}

// Disconnected returns a context that cancellation does not touch, for
// cleanup code that must run after the workflow was cancelled.
func Disconnected(ctx Context) Context {
	p := ctx.(*wfContext)
	return &wfContext{s: p.s, parent: p, disc: true}
}

// WorkflowInfoOf returns the identity of the run ctx belongs to. The
// accessors read "<what>Of(ctx)": WorkflowInfoOf and WorkflowHeadersOf in a
// workflow, ActivityInfoOf and ActivityHeadersOf in an activity.
func WorkflowInfoOf(ctx Context) WorkflowInfo { return ctx.state().info }

// WorkflowHeadersOf returns a copy of the run's headers.
func WorkflowHeadersOf(ctx Context) Headers { return ctx.state().headers.Clone() }

// IsReplaying reports whether the workflow is re-executing recorded steps.
// It is always true while a query replays the run, and false once the
// workflow function has returned in a live run (its end is recorded live).
func IsReplaying(ctx Context) bool { return ctx.state().replaying() }

// Logger returns a logger tagged with the run that discards records while the
// workflow is replaying, so a resumed run does not log its past twice.
func Logger(ctx Context) *slog.Logger {
	s := ctx.state()
	return slog.New(&replayAwareHandler{inner: s.e.cfg.Logger.Handler(), s: s}).With(
		"workflow_id", s.info.WorkflowID, "run_id", s.info.RunID, "workflow_type", s.info.WorkflowType)
}

// Now returns the workflow's current time: recorded on first execution and
// replayed afterwards.
func Now(ctx Context) time.Time {
	t, err := SideEffect(ctx, "graft.now", func() (time.Time, error) { return ctx.state().e.cfg.Clock.Now(), nil })
	if err != nil {
		panic(err)
	}
	return t
}
