package graftsync

import (
	"time"
)

// change is what one row receives from consecutive checkpoints of one
// workflow: their events folded in order, later values over earlier ones.
// It is also the outbox's payload, so its JSON form is stable.
type change struct {
	Key        string `json:"key"`
	WorkflowID string `json:"wf"`
	RunID      string `json:"run"`
	// First and Last are the positions of the first and last event folded
	// in. Before the write they are indexes in the batch; the write adds
	// the transaction's base (see the package documentation).
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	State State `json:"state"`
	// Weak: every event folded in was a wait. A wait does not move a
	// workflow out of StateNeedsOperator, and only the stored state tells
	// whether it is in it.
	Weak bool `json:"weak,omitempty"`
	// Started: a workflow start is folded in (MissingFail refuses it).
	Started bool `json:"started,omitempty"`
	// Closed: the run's end is folded in; later events of the run are
	// dropped (an activity left running by a workflow that returned).
	Closed bool      `json:"closed,omitempty"`
	At     time.Time `json:"at"`

	Step     *string   `json:"step,omitempty"`
	Err      *string   `json:"err,omitempty"`
	ClearErr bool      `json:"clear_err,omitempty"`
	Attempts *int64    `json:"attempts,omitempty"`
	Progress *string   `json:"progress,omitempty"`
	Extras   []*string `json:"extras,omitempty"`

	// out is what the write did with the change; now is the state the
	// guard left the row in.
	out outcome
	now State
	// seqFirst and seqLast are the Seq of the first and last event folded
	// in, of the change's run (see recentRows).
	seqFirst, seqLast int
}

// outcome is what a write did with a change, as flags.
type outcome uint8

const (
	outPassed   outcome = 1 << iota // past the guard
	outDeferred                     // queued behind changes waiting in the outbox
	outUpdated                      // the legacy row was written
	outExists                       // the legacy row exists (written or not)
	outInserted                     // the legacy row was created
)

// merge folds the later change s into c. Both are for the same row.
func (c *change) merge(s *change) {
	if c.Closed && s.RunID == c.RunID {
		return // nothing of a run comes after its end
	}
	if s.RunID != c.RunID {
		c.seqFirst = s.seqFirst
	}
	c.seqLast = s.seqLast
	c.WorkflowID, c.RunID, c.Last = s.WorkflowID, s.RunID, s.Last
	if s.Weak {
		if c.State != StateNeedsOperator {
			c.State = StateWaiting
		}
	} else {
		c.State, c.Weak = s.State, false
	}
	c.Started = c.Started || s.Started
	c.Closed = s.Closed
	c.At = s.At
	if s.Step != nil {
		c.Step = s.Step
	}
	if s.Err != nil {
		c.Err, c.ClearErr = s.Err, false
	} else if s.ClearErr {
		c.Err, c.ClearErr = nil, true
	}
	if s.Attempts != nil {
		c.Attempts = s.Attempts
	}
	if s.Progress != nil {
		c.Progress = s.Progress
	}
	for i, x := range s.Extras {
		if x == nil {
			continue
		}
		for len(c.Extras) <= i {
			c.Extras = append(c.Extras, nil)
		}
		c.Extras[i] = x
	}
}

// batch collects changes by row, in the order rows first appear.
type batch struct {
	byKey map[string]*change
	order []*change
}

func (b *batch) add(c *change) {
	if b.byKey == nil {
		b.byKey = map[string]*change{}
	}
	if prev := b.byKey[c.Key]; prev != nil {
		prev.merge(c)
		return
	}
	b.byKey[c.Key] = c
	b.order = append(b.order, c)
}
