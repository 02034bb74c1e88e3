package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// RecordedRun is one run's durable record: what a worker replays when it
// resumes the run. Client.Record and Client.Records read it from the
// database; it encodes to JSON (WriteRecords, ReadRecords) so a test can keep
// histories from production in files and replay them with a Replayer.
type RecordedRun struct {
	WorkflowID   string  `json:"workflow_id"`
	RunID        string  `json:"run_id"`
	WorkflowType string  `json:"workflow_type"`
	Queue        string  `json:"queue"`
	Status       Status  `json:"status"`
	Headers      Headers `json:"headers,omitempty"`
	// Input is the workflow's encoded input.
	Input           []byte         `json:"input,omitempty"`
	CreatedAt       time.Time      `json:"created_at"`
	CancelRequested bool           `json:"cancel_requested,omitempty"`
	CancelReason    string         `json:"cancel_reason,omitempty"`
	Steps           []RecordedStep `json:"steps"`
}

// RecordedStep is one step of a RecordedRun, as stored.
type RecordedStep struct {
	Seq             int             `json:"seq"`
	Kind            string          `json:"kind"`
	Name            string          `json:"name"`
	Status          string          `json:"status"`
	Input           []byte          `json:"input,omitempty"`
	Output          []byte          `json:"output,omitempty"`
	Error           json.RawMessage `json:"error,omitempty"`
	Attempts        int             `json:"attempts,omitempty"`
	StartedAt       time.Time       `json:"started_at,omitzero"`
	CompletedAt     time.Time       `json:"completed_at,omitzero"`
	FireAt          time.Time       `json:"fire_at,omitzero"`
	ChildWorkflowID string          `json:"child_workflow_id,omitempty"`
}

// recordsFile is the JSON form WriteRecords writes and ReadRecords reads.
type recordsFile struct {
	Format string         `json:"format"`
	Runs   []*RecordedRun `json:"runs"`
}

const recordsFormat = "graft-records/1"

// WriteRecords encodes runs as JSON, in the form ReadRecords reads.
func WriteRecords(runs []*RecordedRun) ([]byte, error) {
	return json.MarshalIndent(recordsFile{Format: recordsFormat, Runs: runs}, "", "  ")
}

// ReadRecords decodes what WriteRecords wrote.
func ReadRecords(b []byte) ([]*RecordedRun, error) {
	var f recordsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("engine: read records: %w", err)
	}
	if f.Format != recordsFormat {
		return nil, fmt.Errorf("engine: read records: format %q, want %q", f.Format, recordsFormat)
	}
	return f.Runs, nil
}

// Record reads the durable record of one run.
func (c *Client) Record(ctx context.Context, runID string) (*RecordedRun, error) {
	r, err := c.e.store.getRun(ctx, c.e.db, runID)
	if err != nil {
		return nil, err
	}
	out, err := c.records(ctx, []*runRow{r})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// Records reads the durable records of the runs List returns for f: the
// histories a Replayer checks today's workflow code against before a deploy.
func (c *Client) Records(ctx context.Context, f ListFilter) ([]*RecordedRun, error) {
	infos, err := c.List(ctx, f)
	if err != nil {
		return nil, err
	}
	rows := make([]*runRow, 0, len(infos))
	for _, info := range infos {
		r, err := c.e.store.getRun(ctx, c.e.db, info.RunID)
		if errors.Is(err, ErrNotFound) {
			continue // removed since (retention)
		}
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return c.records(ctx, rows)
}

func (c *Client) records(ctx context.Context, rows []*runRow) ([]*RecordedRun, error) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.RunID
	}
	hist, err := c.e.store.loadHistories(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*RecordedRun, len(rows))
	for i, r := range rows {
		rr := &RecordedRun{WorkflowID: r.WorkflowID, RunID: r.RunID, WorkflowType: r.WorkflowType, Queue: r.Queue,
			Status: r.status(), Headers: r.headers(), Input: r.Input, CreatedAt: r.CreatedAt,
			CancelRequested: r.CancelRequestedAt.Valid, CancelReason: r.CancelReason.String, Steps: []RecordedStep{}}
		for _, st := range hist[r.RunID] {
			rr.Steps = append(rr.Steps, RecordedStep{Seq: st.Seq, Kind: st.Kind, Name: st.Name, Status: st.Status,
				Input: st.Input, Output: st.Output, Error: st.Error, Attempts: st.Attempts, StartedAt: st.StartedAt.Time,
				CompletedAt: st.CompletedAt.Time, FireAt: st.FireAt.Time, ChildWorkflowID: st.ChildWorkflowID.String})
		}
		out[i] = rr
	}
	return out, nil
}

// Replayer runs today's workflow code against recorded runs, without a
// database and without running any activity, and reports the first step
// where the code no longer makes the calls the record holds: the
// non-determinism that would fail those runs when a worker with the new code
// resumes them. Run it in a test before a deploy, against records read
// with Client.Records or kept in files (WriteRecords).
type Replayer struct {
	e *Engine
}

// NewReplayer returns a Replayer for the given workflow definitions (the
// activities they call need not be registered: they are never run).
func NewReplayer(defs ...Definition) (*Replayer, error) {
	c := (&Config{}).withDefaults()
	ch, err := buildChains(nil)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: c, reg: newRegistry(), chains: ch}
	for _, d := range defs {
		if err := e.reg.add(d); err != nil {
			return nil, err
		}
	}
	return &Replayer{e: e}, nil
}

// ReplayError reports a recorded run that today's workflow code does not
// replay. Err is a *NonDeterminismError naming the step (errors.As finds
// it), a *PanicError, or ErrUnknownWorkflow.
type ReplayError struct {
	WorkflowID   string
	RunID        string
	WorkflowType string
	Err          error
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("engine: replay of run %s (workflow %s, type %s): %v", e.RunID, e.WorkflowID, e.WorkflowType, e.Err)
}

// Unwrap returns the cause.
func (e *ReplayError) Unwrap() error { return e.Err }

// Replay re-executes run with today's code. It returns nil when the code
// asks for the recorded steps in order (a closed run: all of them, and
// then returns; an open run: up to where its record ends), else a
// *ReplayError. A workflow that now fails or returns another result after
// making the same calls is not non-deterministic and is not reported.
func (r *Replayer) Replay(ctx context.Context, run *RecordedRun) error {
	fail := func(err error) error {
		return &ReplayError{WorkflowID: run.WorkflowID, RunID: run.RunID, WorkflowType: run.WorkflowType, Err: err}
	}
	def := r.e.reg.workflows[run.WorkflowType]
	if def == nil {
		return fail(fmt.Errorf("%w: %q is not given to the replayer", ErrUnknownWorkflow, run.WorkflowType))
	}
	hdr, _ := json.Marshal(run.Headers)
	row := &runRow{RunID: run.RunID, WorkflowID: run.WorkflowID, WorkflowType: run.WorkflowType, Queue: run.Queue,
		Status: run.Status, Input: run.Input, Headers: hdr, CreatedAt: run.CreatedAt, Loads: 1,
		CancelReason: sql.NullString{String: run.CancelReason, Valid: run.CancelReason != ""}}
	if run.CancelRequested {
		row.CancelRequestedAt = sql.NullTime{Time: run.CreatedAt, Valid: true}
	}
	steps := make([]*stepRow, len(run.Steps))
	for i, st := range run.Steps {
		steps[i] = &stepRow{RunID: run.RunID, Seq: st.Seq, Kind: st.Kind, Name: st.Name, Status: st.Status,
			Input: st.Input, Output: st.Output, Error: st.Error, Attempts: st.Attempts, StartedAt: nullTime(st.StartedAt),
			CompletedAt: nullTime(st.CompletedAt), FireAt: nullTime(st.FireAt), ChildWorkflowID: nullString(st.ChildWorkflowID)}
		if len(st.Error) == 0 {
			steps[i].Error = nil
		}
	}
	s := newRunState(r.e, nil, modeQuery, row, def, &r.e.chains, steps, nil)
	go s.main()
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.abandonFirst()
		return ctx.Err()
	}
	closed := !run.Status.IsOpen()
	if s.replayEnd == nil {
		// The workflow stopped at a step without a record: where an open
		// run's record ends, or past the end of a closed run's.
		if closed && s.seq-1 > s.lastRecorded {
			return fail(&NonDeterminismError{Seq: s.seq - 1,
				Recorded:  fmt.Sprintf("no step (the run %s after step %d)", run.Status, s.lastRecorded),
				Requested: "another step"})
		}
		return nil
	}
	var nd *NonDeterminismError
	var pe *PanicError
	switch err := s.replayEnd.err; {
	case errors.As(err, &nd):
		return fail(nd)
	case errors.As(err, &pe):
		return fail(pe)
	}
	// The workflow returned: every record must have been asked for.
	seqs := make([]int, 0, len(s.history))
	for seq := range s.history {
		if seq >= s.seq {
			seqs = append(seqs, seq)
		}
	}
	if len(seqs) > 0 {
		first := slices.Min(seqs)
		rec := s.history[first]
		return fail(&NonDeterminismError{Seq: first, Recorded: describeStep(rec.Kind, rec.Name), Requested: "the workflow's return"})
	}
	return nil
}

// replayEnd is how the workflow function ended in a replay that does not
// record (a query's, a Replayer's).
type replayEnd struct {
	out any
	err error
}
