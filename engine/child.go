package engine

import (
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
	f := &future{s: s}
	if err := s.cancelPoint(ctx); err != nil {
		f.done, f.err = true, err
		return f
	}
	if opts == nil {
		opts = &ChildOptions{}
	}
	seq, rec := s.nextSeq()
	f.seq = seq
	outIn := &OutboundInput{Info: s.info, Kind: OutboundChild, Name: name, Seq: seq, Args: in, Headers: s.headers.Clone(), Replaying: rec != nil || s.mode == modeQuery}
	outErr := s.ch.callOutbound(ctx, outIn)
	if rec != nil {
		s.expect(seq, rec, stepChild, name)
		if rec.Status != stepStarted {
			f.done, f.value, f.err = true, rec.Output, decodeError(rec.Error)
			return f
		}
		s.mu.Lock()
		s.children[seq] = f
		s.mu.Unlock()
		return f
	}
	s.stopIfQuery()
	// An outbound interceptor refused the call; it refuses it again on
	// replay (interceptors are deterministic), so no record is needed.
	if outErr != nil {
		f.done, f.err = true, outErr
		return f
	}
	if s.e.reg.workflows[name] == nil {
		f.done, f.err = true, NewNonRetryableError(ErrorTypeUnknownWorkflow, fmt.Sprintf("%v: %q", ErrUnknownWorkflow, name), nil)
		return f
	}
	input, err := s.e.encodePayload("input of child workflow "+name, in)
	if err != nil {
		f.done, f.err = true, NewNonRetryableError(ErrorTypePayloadTooLarge, err.Error(), nil)
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
		Headers: mustJSON(outIn.Headers), WakeAt: nullTime(now), ParentRunID: nullString(s.row.RunID),
		ParentSeq: nullInt(int64(seq)), ParentClosePolicy: nullString(policy), StartReason: "child"}
	s.mu.Lock()
	s.children[seq] = f
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
