package engine

import (
	"encoding/json"
	"fmt"
)

// ChildOptions configure a child workflow start. nil means the defaults.
type ChildOptions struct {
	// ID is the child's workflow ID. Default "<parent ID>/<step number>",
	// which is stable across replays.
	ID string
	// Queue defaults to the parent's queue.
	Queue string
	// Detached leaves the child running when the parent closes or is
	// cancelled. By default a parent's cancellation or end cancels it.
	Detached bool
}

// StartChild starts wf as a child of the calling workflow and returns a
// future of its result. Starting is part of the parent's record: a replay
// does not start the child twice.
func (w *Workflow[In, Out]) StartChild(ctx Context, in In, opts *ChildOptions) Future[Out] {
	return Future[Out]{f: ctx.state().startChild(ctx, w.name, in, opts)}
}

// RunChild starts wf as a child and waits for its result.
func (w *Workflow[In, Out]) RunChild(ctx Context, in In, opts *ChildOptions) (Out, error) {
	return w.StartChild(ctx, in, opts).Get(ctx)
}

func (s *runState) startChild(ctx Context, name string, in any, opts *ChildOptions) *future {
	if opts == nil {
		opts = &ChildOptions{}
	}
	c := s.outbound(ctx, OutboundChild, name, in)
	if c.f.done {
		return c.f
	}
	f, seq, rec, outIn := c.f, c.seq, c.rec, c.in
	if rec != nil {
		s.expect(seq, rec, stepChild, name)
		if rec.Status != stepStarted {
			f.done, f.value, f.err = true, rec.Output, decodeError(rec.Error)
			return f
		}
		s.mu.Lock()
		put(&s.children, seq, f)
		s.mu.Unlock()
		return f
	}
	var unknown error
	if s.e.reg.workflows[name] == nil {
		unknown = NewNonRetryableError(ErrorTypeUnknownWorkflow, fmt.Sprintf("%v: %q", ErrUnknownWorkflow, name), nil)
	}
	input, ok := s.goLive(c, "input of child workflow "+name, in, unknown)
	if !ok {
		return f
	}
	id := opts.ID
	if id == "" {
		id = fmt.Sprintf("%s/%d", s.info.WorkflowID, seq)
	}
	queue := opts.Queue
	if queue == "" {
		queue = s.info.Queue
	}
	policy := "cancel"
	if opts.Detached {
		policy = "abandon"
	}
	now := s.e.cfg.Clock.Now()
	step := &stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepChild, Name: name, Status: stepStarted, Input: input,
		StartedAt: nullTime(now), ChildWorkflowID: nullString(id)}
	row := runRow{RunID: newRunID(), WorkflowID: id, WorkflowType: name, Queue: queue, Input: input,
		Headers: marshalHeaders(outIn.Headers), WakeAt: nullTime(now), ParentRunID: nullString(s.row.RunID),
		ParentSeq: nullInt(int64(seq)), ParentClosePolicy: nullString(policy), StartReason: "child"}
	s.mu.Lock()
	put(&s.children, seq, f)
	s.hadChildren = true
	s.mu.Unlock()
	s.histBytes.Add(step.size())
	// The child's start commits with (or after) every earlier step of the
	// parent (the ordering rule); nothing here waits for it, as the child
	// does not run before its row commits.
	_ = s.submitPending(&writeOp{newRun: &newRunSpec{row: row, reuse: ReuseAllowDuplicate, childStep: step},
		done: func(err error) {
			if err != nil {
				s.dropAfter(err)
				return
			}
			if step.Status == stepFailed {
				s.mu.Lock()
				f.resolveLocked(nil, decodeError(step.Error))
				delete(s.children, seq)
				s.mu.Unlock()
				s.poke()
			}
		}}, false)
	return f
}

// outboundCall is an activity or child call on its way out of the workflow:
// its future, its step number, its record when the run replays it, and what
// the outbound interceptors made of it.
type outboundCall struct {
	f       *future
	seq     int
	rec     *stepRow
	in      *OutboundInput
	refused error // an outbound interceptor's error
}

// outbound is the start an activity call and a child start share: the
// cancellation point, the next step number and its record, and the outbound
// chain (which also sees replayed calls). c.f is done when the workflow's
// context is cancelled; the caller then checks c.rec against its kind.
func (s *runState) outbound(ctx Context, kind OutboundKind, name string, args any) *outboundCall {
	c := &outboundCall{f: &future{s: s}}
	if err := s.cancelPoint(ctx); err != nil {
		c.f.done, c.f.err = true, err
		return c
	}
	c.seq, c.rec = s.nextSeq()
	c.f.seq = c.seq
	n := len(s.ch.outbound)
	c.in = &OutboundInput{Info: s.info, Kind: kind, Name: name, Seq: c.seq, Args: args, Headers: s.callHeaders.lend(s.headers, n),
		Replaying: c.rec != nil || s.mode == modeQuery}
	if kind == OutboundActivity {
		c.in.Result = Future[json.RawMessage]{f: c.f}
	}
	c.refused = s.ch.callOutbound(ctx, c.in)
	c.in.Headers = s.callHeaders.settle(s.headers, c.in.Headers, n)
	return c
}

// goLive is the step an activity call and a child start share once the
// record has nothing for them: a query stops here, an interceptor's refusal
// or unknown (the error for an unregistered name) resolves the future, and
// the input is encoded. It returns false when c.f is resolved instead.
func (s *runState) goLive(c *outboundCall, what string, args any, unknown error) ([]byte, bool) {
	if c.f.done {
		return nil, false
	}
	s.stopIfQuery()
	// An outbound interceptor refused the call; it refuses it again on
	// replay (interceptors are deterministic), so no record is needed.
	if c.refused != nil {
		c.f.done, c.f.err = true, c.refused
		return nil, false
	}
	if unknown != nil {
		c.f.done, c.f.err = true, unknown
		return nil, false
	}
	input, err := s.e.encodePayload(what, args)
	if err != nil {
		c.f.done, c.f.err = true, NewNonRetryableError(ErrorTypePayloadTooLarge, err.Error(), nil)
		return nil, false
	}
	return input, true
}
