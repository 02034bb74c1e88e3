package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// The ...Tx calls write in the caller's transaction, so that a change to the
// caller's own tables (claiming a legacy row, say) and the start, signal or
// cancellation of a workflow commit or roll back together. Nothing is visible
// to workers before the caller commits; the notification that wakes them is
// sent by PostgreSQL at that commit. A rollback leaves no trace.
//
// They take a *sql.Tx; with sqlx, pass tx.Tx. The transaction must be on the
// database that holds graft's schema. Client interceptors see each call as
// usual, but before the caller's commit, which may still roll it back.
// A run started in a transaction is never started eagerly by a local worker
// (its start is not known to have happened until the caller commits), and
// checkpoint interceptors receive its start event in tx.

// StartTx starts the workflow in the caller's transaction tx. The run exists
// if and only if tx commits. A conflicting open run (or the ID reuse policy)
// is reported as for Start: ErrAlreadyStarted, or the open run's handle
// with ConflictUseExisting. Such an error leaves tx usable.
func (w *Workflow[In, Out]) StartTx(ctx context.Context, c *Client, tx *sql.Tx, in In, opts *StartOptions) (*Run[Out], error) {
	res, err := c.startManyTx(ctx, tx, []StartManyParams{{Workflow: w.name, Options: opts}}, []any{in})
	if err != nil {
		return nil, err
	}
	if res[0].Err != nil {
		return nil, res[0].Err
	}
	return &Run[Out]{RunHandle: *res[0].Run}, nil
}

// StartByNameTx is StartByName in the caller's transaction (see StartTx).
func (c *Client) StartByNameTx(ctx context.Context, tx *sql.Tx, name string, input json.RawMessage, opts *StartOptions) (*RunHandle, error) {
	res, err := c.StartManyTx(ctx, tx, []StartManyParams{{Workflow: name, Input: input, Options: opts}})
	if err != nil {
		return nil, err
	}
	return res[0].Run, res[0].Err
}

// StartManyParams is one start of StartManyTx.
type StartManyParams struct {
	// Workflow is the registered workflow name.
	Workflow string
	// Input is the workflow's input as JSON; it must decode into the
	// workflow's input type (unknown fields are refused).
	Input json.RawMessage
	// Options as for Start; nil means the defaults.
	Options *StartOptions
}

// StartManyResult is the outcome of one start of StartManyTx: Run, or Err
// when that start was refused (an unknown workflow, input that does not
// decode, an oversized payload, ErrAlreadyStarted).
type StartManyResult struct {
	Run *RunHandle
	Err error
}

// StartManyTx starts many workflows in the caller's transaction with one
// insert, which is what a claim of a batch of legacy rows needs. A start
// refused for its own reasons is reported in its result and the others go
// on; tx stays usable. The returned error is for the whole call (a database
// error, after which tx should be rolled back). See StartTx.
func (c *Client) StartManyTx(ctx context.Context, tx *sql.Tx, starts []StartManyParams) ([]StartManyResult, error) {
	return c.startManyTx(ctx, tx, starts, nil)
}

// startManyTx starts starts[i] with input args[i] when args is given (typed
// starts), else with the decoded starts[i].Input.
func (c *Client) startManyTx(ctx context.Context, tx *sql.Tx, starts []StartManyParams, args []any) ([]StartManyResult, error) {
	if tx == nil {
		return nil, errors.New("engine: a Tx call needs a transaction (tx is nil)")
	}
	res := make([]StartManyResult, len(starts))
	batch := make([]*writeOp, 0, len(starts))
	idx := make([]int, 0, len(starts))
	opts := make([]StartOptions, len(starts))
	var events []*CheckpointEvent
	for i, st := range starts {
		o, err := startDefaults(st.Options)
		if err != nil {
			res[i].Err = err
			continue
		}
		opts[i] = o
		var in any
		var raw []byte
		if args != nil {
			in = args[i]
		} else {
			def := c.e.reg.workflows[st.Workflow]
			if def == nil {
				res[i].Err = fmt.Errorf("%w: %q", ErrUnknownWorkflow, st.Workflow)
				continue
			}
			if in, err = def.decodeInputStrict(st.Input); err != nil {
				res[i].Err = err
				continue
			}
			raw = st.Input
		}
		// The chain sees the start; its last step only prepares the run,
		// which is inserted with the others below.
		out, err := c.call(ctx, &ClientCallInput{Kind: ClientStart, WorkflowID: o.ID, WorkflowType: st.Workflow, Args: in, Headers: o.Headers.Clone()},
			func(ctx context.Context, ci *ClientCallInput) (any, error) {
				o.Headers = ci.Headers
				spec, err := c.newStartSpec(st.Workflow, ci.Args, raw, &o)
				if err != nil {
					return nil, err
				}
				batch = append(batch, &writeOp{runID: spec.row.RunID, newRun: spec})
				idx = append(idx, len(idx))
				events = append(events, &CheckpointEvent{Kind: CheckpointWorkflowStarted, WorkflowID: o.ID, RunID: spec.row.RunID,
					WorkflowType: st.Workflow, Headers: o.Headers, Status: StatusPending, Input: ci.Args, At: spec.row.CreatedAt})
				return &RunHandle{WorkflowID: o.ID, RunID: spec.row.RunID, c: c}, nil
			})
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].Run = out.(*RunHandle)
	}
	if len(batch) == 0 {
		return res, nil
	}
	ok, err := c.e.store.insertRuns(ctx, tx, nil, c.e.cfg.LeaseTTL, batch, idx, true)
	if err != nil {
		return nil, fmt.Errorf("engine: start in transaction: %w", err)
	}
	var started []*CheckpointEvent
	for i, r := range res {
		if r.Run == nil {
			continue
		}
		if ok[r.Run.RunID] {
			for _, ev := range events {
				if ev.RunID == r.Run.RunID {
					started = append(started, ev)
				}
			}
			continue
		}
		res[i].Run, res[i].Err = nil, fmt.Errorf("%w: workflow ID %q", ErrAlreadyStarted, opts[i].ID)
		if opts[i].ConflictPolicy == ConflictUseExisting {
			res[i].Run, res[i].Err = c.existingTx(ctx, tx, &opts[i])
		}
	}
	for _, h := range c.e.chains.checkpoint {
		if len(started) == 0 {
			break
		}
		if err := callCheckpoint(ctx, h, tx, started); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// existingTx returns the open run of o.ID as seen in tx, or ErrAlreadyStarted
// when the start was refused by the ID reuse policy (no run is open).
func (c *Client) existingTx(ctx context.Context, tx *sql.Tx, o *StartOptions) (*RunHandle, error) {
	r, err := c.e.store.latestRun(ctx, c.sqlxTx(tx), o.ID)
	if err != nil || !isOpen(r.Status) {
		return nil, fmt.Errorf("%w: workflow ID %q", ErrAlreadyStarted, o.ID)
	}
	return &RunHandle{WorkflowID: o.ID, RunID: r.RunID, c: c}, nil
}

// SignalTx is Signal in the caller's transaction: the signal is delivered
// if and only if tx commits, and the run is woken then.
func (c *Client) SignalTx(ctx context.Context, tx *sql.Tx, workflowID, name string, payload any) error {
	if tx == nil {
		return errors.New("engine: a Tx call needs a transaction (tx is nil)")
	}
	_, err := c.call(ctx, &ClientCallInput{Kind: ClientSignal, WorkflowID: workflowID, Name: name, Args: payload},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			if in.Name == "" {
				return nil, fmt.Errorf("engine: signal name is empty")
			}
			b, err := c.e.encodePayload("signal "+in.Name, in.Args)
			if err != nil {
				return nil, err
			}
			_, err = c.deliverSignal(ctx, c.sqlxTx(tx), in.WorkflowID, in.Name, b, headersJSON(in.Headers))
			return nil, err
		})
	return err
}

// CancelTx is Cancel in the caller's transaction: the cancellation is
// requested if and only if tx commits, and the run is woken then.
func (c *Client) CancelTx(ctx context.Context, tx *sql.Tx, workflowID, reason string) error {
	if tx == nil {
		return errors.New("engine: a Tx call needs a transaction (tx is nil)")
	}
	_, err := c.call(ctx, &ClientCallInput{Kind: ClientCancel, WorkflowID: workflowID, Args: reason},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			_, err := c.requestCancel(ctx, c.sqlxTx(tx), in.WorkflowID, reason)
			return nil, err
		})
	return err
}

// ResetTx is Reset in the caller's transaction: the new run exists if and
// only if tx commits, and workers are woken then. A caller that records, in
// the same transaction, that it reset the workflow never resets it twice.
func (c *Client) ResetTx(ctx context.Context, tx *sql.Tx, workflowID string, opts ResetOptions) (*RunHandle, error) {
	if tx == nil {
		return nil, errors.New("engine: a Tx call needs a transaction (tx is nil)")
	}
	res, err := c.call(ctx, &ClientCallInput{Kind: ClientReset, WorkflowID: workflowID, Args: opts},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			if err := opts.check(); err != nil {
				return nil, err
			}
			return c.resetIn(ctx, c.sqlxTx(tx), in.WorkflowID, opts)
		})
	if err != nil {
		return nil, err
	}
	return res.(*RunHandle), nil
}

// sqlxTx views the caller's transaction through sqlx, as the store reads.
func (c *Client) sqlxTx(tx *sql.Tx) *sqlx.Tx {
	return &sqlx.Tx{Tx: tx, Mapper: c.e.db.Mapper}
}
