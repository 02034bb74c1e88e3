package engine

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// IDReusePolicy decides whether a workflow ID whose earlier runs are closed
// may start again.
type IDReusePolicy string

// ID reuse policies.
const (
	// ReuseAllowDuplicate allows a new run once earlier ones are closed (default).
	ReuseAllowDuplicate IDReusePolicy = "allow"
	// ReuseAllowDuplicateFailedOnly allows it only if no earlier run completed.
	ReuseAllowDuplicateFailedOnly IDReusePolicy = "failed_only"
	// ReuseRejectDuplicate never reuses an ID.
	ReuseRejectDuplicate IDReusePolicy = "reject"
)

// ConflictPolicy decides what a start does when a run with the ID is open.
type ConflictPolicy string

// Conflict policies.
const (
	// ConflictFail returns ErrAlreadyStarted (default).
	ConflictFail ConflictPolicy = "fail"
	// ConflictUseExisting returns a handle to the open run.
	ConflictUseExisting ConflictPolicy = "use_existing"
)

// StartOptions configure a workflow start. nil means the defaults.
type StartOptions struct {
	// ID is the workflow ID; starting twice with one ID never creates two
	// open runs. Default: a new UUID.
	ID string
	// Queue routes the run to workers of that queue. Default DefaultQueue.
	Queue string
	// IDReusePolicy applies when earlier runs of the ID are closed.
	IDReusePolicy IDReusePolicy
	// ConflictPolicy applies when a run of the ID is open.
	ConflictPolicy ConflictPolicy
	// Headers travel with the run into its activities and children.
	Headers Headers
	// Delay postpones the first execution.
	Delay time.Duration

	// signal is buffered for the run in the transaction that creates it
	// (SignalWithStart).
	signal *startSignal
}

// Client starts and controls workflows. It is cheap; get one from
// Engine.Client, or from NewClient in a process that runs no workers.
type Client struct {
	e *Engine
	// own is set on a NewClient client: it owns e (and db, when it opened
	// it), which Close closes.
	own *ownedClient
}

// Client returns a client bound to the engine (and its interceptors).
func (e *Engine) Client() *Client { return &Client{e: e} }

// RunHandle identifies a started run.
type RunHandle struct {
	WorkflowID string
	RunID      string
	c          *Client
	// local receives the outcome when this process runs the workflow.
	local *localOutcome
}

// Run is a typed handle whose Result decodes into Out.
type Run[Out any] struct{ RunHandle }

// Start starts the workflow with input in.
func (w *Workflow[In, Out]) Start(ctx context.Context, c *Client, in In, opts *StartOptions) (*Run[Out], error) {
	h, err := c.start(ctx, w.name, in, nil, opts)
	if err != nil {
		return nil, err
	}
	return &Run[Out]{RunHandle: *h}, nil
}

// StartByName starts a registered workflow from JSON input, as an HTTP API
// would. An unknown name, input that does not decode into the declared type
// or an oversized payload is refused before anything is written.
func (c *Client) StartByName(ctx context.Context, name string, input json.RawMessage, opts *StartOptions) (*RunHandle, error) {
	def := c.e.reg.workflows[name]
	if def == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownWorkflow, name)
	}
	args, err := def.decodeInputStrict(input)
	if err != nil {
		return nil, err
	}
	return c.start(ctx, name, args, input, opts)
}

func (c *Client) start(ctx context.Context, name string, args any, raw []byte, opts *StartOptions) (*RunHandle, error) {
	o, err := startDefaults(opts)
	if err != nil {
		return nil, err
	}
	res, err := c.call(ctx, &ClientCallInput{Kind: ClientStart, WorkflowID: o.ID, WorkflowType: name, Args: args, Headers: o.Headers.Clone()},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			o.Headers = in.Headers
			return c.insertStart(ctx, name, in.Args, raw, &o)
		})
	if err != nil {
		return nil, err
	}
	return res.(*RunHandle), nil
}

// startDefaults applies the defaults to opts and validates them.
func startDefaults(opts *StartOptions) (StartOptions, error) {
	o := StartOptions{}
	if opts != nil {
		o = *opts
	}
	if o.ID == "" {
		o.ID = newRunID()
	}
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.IDReusePolicy == "" {
		o.IDReusePolicy = ReuseAllowDuplicate
	}
	if o.ConflictPolicy == "" {
		o.ConflictPolicy = ConflictFail
	}
	switch {
	case o.IDReusePolicy != ReuseAllowDuplicate && o.IDReusePolicy != ReuseAllowDuplicateFailedOnly && o.IDReusePolicy != ReuseRejectDuplicate:
		return o, fmt.Errorf("engine: StartOptions.IDReusePolicy %q is unknown", o.IDReusePolicy)
	case o.ConflictPolicy != ConflictFail && o.ConflictPolicy != ConflictUseExisting:
		return o, fmt.Errorf("engine: StartOptions.ConflictPolicy %q is unknown", o.ConflictPolicy)
	case len(o.ID) > 500:
		return o, fmt.Errorf("engine: StartOptions.ID is %d bytes, limit is 500", len(o.ID))
	}
	return o, nil
}

func (c *Client) insertStart(ctx context.Context, name string, args any, raw []byte, o *StartOptions) (*RunHandle, error) {
	spec, err := c.newStartSpec(name, args, raw, o)
	if err != nil {
		return nil, err
	}
	row, now := spec.row, spec.row.CreatedAt
	// Eager start: a local worker with a free slot takes the run in the same
	// transaction that creates it, saving a claim round trip. A start with a
	// signal is claimed normally, so the run loads the signal with its record.
	var eager *Worker
	if o.Delay <= 0 && o.signal == nil {
		for _, w := range c.e.localWorkers() {
			if w.tryReserve(o.Queue, name) {
				eager = w
				spec.leaseOwner = w.id
				break
			}
		}
	}
	var local chan *closedRun
	if eager != nil {
		local = c.e.waitChan(row.RunID, true)
		eager.expect(row.RunID) // a signal right after the commit is kept for launch
	}
	op := &writeOp{runID: row.RunID, newRun: spec}
	if len(c.e.chains.checkpoint) > 0 { // (nothing else reads events)
		op.events = []*CheckpointEvent{{Kind: CheckpointWorkflowStarted, WorkflowID: o.ID, RunID: row.RunID, WorkflowType: name,
			Headers: o.Headers, Status: StatusPending, Input: args, At: now}}
	}
	if eager != nil {
		err = c.startEager(ctx, eager, row, op)
		if errors.Is(err, errNotLaunched) {
			// The worker began to stop: start the run for any worker.
			c.e.dropWaiter(row.RunID, local)
			eager, local, spec.leaseOwner, op.done = nil, nil, "", nil
		}
	}
	if eager == nil {
		err = c.e.commit.submitWait(ctx, op)
	}
	if eager != nil && err != nil {
		// The run state stopped itself and gives its slot back.
		c.e.dropWaiter(row.RunID, local)
		if !errors.Is(err, ErrAlreadyStarted) && !errors.Is(err, ctx.Err()) {
			// The outcome of the write is unknown (the engine stopped
			// while the database did not answer): a run created leased
			// to this worker is given back at once rather than left to
			// its lease's expiry.
			uctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.CommitTimeout)
			_ = c.e.store.unclaimNew(uctx, eager.id, row.RunID)
			cancel()
		}
	}
	if errors.Is(err, ErrAlreadyStarted) {
		existing, lerr := c.e.store.latestRun(ctx, c.e.db, o.ID)
		if lerr == nil && isOpen(existing.Status) && o.ConflictPolicy == ConflictUseExisting {
			return &RunHandle{WorkflowID: o.ID, RunID: existing.RunID, c: c}, nil
		}
		return nil, fmt.Errorf("%w: workflow ID %q", ErrAlreadyStarted, o.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: start %s: %w", name, err)
	}
	var lo *localOutcome
	if local != nil {
		lo = &localOutcome{ch: local, done: make(chan struct{})}
	}
	return &RunHandle{WorkflowID: o.ID, RunID: row.RunID, c: c, local: lo}, nil
}

// eagerStartGrace is how long an eager start's insert waits for the run's
// first records (its first activity's start) to ride in one commit with
// them. Past it the insert goes alone: that activity may wait long for a
// worker's activity slot or an interceptor (a rate limiter), and the
// Start must not wait with it.
const eagerStartGrace = 20 * time.Millisecond

// errNotLaunched: the eager worker was stopping and did not take the run.
var errNotLaunched = errors.New("engine: the worker is stopping")

// startEager launches the run on w at once, before its insert is written:
// the insert (op) commits with the run's first records, typically the
// start of its first activity, which runs only after that commit; if
// nothing has taken it within eagerStartGrace, it is submitted alone. It
// returns the insert's outcome. When ctx ends first, a still queued insert
// is withdrawn (the run state stops, the run never exists) and ctx's error
// returned; one being written is waited for, so a run that was written is
// never reported as not started.
func (c *Client) startEager(ctx context.Context, w *Worker, row runRow, op *writeOp) error {
	outcome := make(chan error, 1)
	op.done = func(err error) { outcome <- err }
	row.Status, row.Loads, row.LeaseOwner = StatusRunning, 1, nullString(w.id)
	s := w.launchRun(&row, nil, nil, op)
	if s == nil {
		return errNotLaunched
	}
	grace := time.NewTimer(cmp.Or(time.Duration(c.e.hooks.eagerGrace.Load()), eagerStartGrace))
	defer grace.Stop()
	for {
		select {
		case err := <-outcome:
			return err
		case <-grace.C:
			// The first activity has not started (no activity slot free,
			// an interceptor holding it back, a long workflow task): the
			// insert goes without it, so a Start never waits on a worker's
			// capacity or a rate limiter.
			s.submitBirth()
		case <-ctx.Done():
			if op.state.CompareAndSwap(opQueued, opWithdrawn) {
				s.abandon()
				return ctx.Err()
			}
			return <-outcome
		}
	}
}

// newStartSpec checks a start and builds the run it inserts: the workflow
// must be registered and its encoded input within the payload limit.
func (c *Client) newStartSpec(name string, args any, raw []byte, o *StartOptions) (*newRunSpec, error) {
	if c.e.reg.workflows[name] == nil && c.own == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownWorkflow, name)
	}
	input := raw
	var err error
	if input == nil {
		if input, err = c.e.encodePayload("input of workflow "+name, args); err != nil {
			return nil, err
		}
	} else if c.e.cfg.MaxPayloadBytes > 0 && len(input) > c.e.cfg.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: input of workflow %s is %d bytes, limit is %d", ErrPayloadTooLarge, name, len(input), c.e.cfg.MaxPayloadBytes)
	}
	if o.Headers == nil {
		o.Headers = Headers{}
	}
	now := c.e.cfg.Clock.Now()
	row := runRow{RunID: newRunID(), WorkflowID: o.ID, WorkflowType: name, Queue: o.Queue, Input: input, CreatedAt: now,
		Headers: marshalHeaders(o.Headers), hdr: o.Headers, WakeAt: nullTime(now.Add(o.Delay)), StartReason: "start"}
	if raw == nil {
		row.liveInput = args
	}
	return &newRunSpec{row: row, reuse: o.IDReusePolicy, signal: o.signal}, nil
}

// call runs the client chain around last. Its outermost interceptor is
// called directly, not through a wrap: a frame fewer while the call waits
// for its commit, and with one interceptor no function made for the chain.
func (c *Client) call(ctx context.Context, in *ClientCallInput, last ClientNext) (any, error) {
	list := c.e.chains.client
	if len(list) == 0 {
		return last(ctx, in)
	}
	return list[0].ClientCall(ctx, in, compose(list[1:], wrapClient, last))
}

// Handle returns a handle to the latest run of a workflow ID.
func (c *Client) Handle(ctx context.Context, workflowID string) (*RunHandle, error) {
	r, err := c.e.store.latestRun(ctx, c.e.db, workflowID)
	if err != nil {
		return nil, err
	}
	return &RunHandle{WorkflowID: workflowID, RunID: r.RunID, c: c}, nil
}

// Result waits for the run to close and decodes its result. It follows
// continue-as-new and reset to the run that finally closes.
func (r *Run[Out]) Result(ctx context.Context) (Out, error) {
	var zero Out
	raw, live, err := r.result(ctx)
	if err != nil {
		return zero, err
	}
	if v, ok := liveValue[Out](live); ok {
		// The run ended in this process: its result as the workflow
		// returned it, which decoding raw would give back (liveValue).
		return v, nil
	}
	var v Out
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &v); err != nil {
			return zero, fmt.Errorf("engine: decode result: %w", err)
		}
	}
	return v, nil
}

// localOutcome is the in-process hand-off of a locally run workflow's end:
// the first Result to receive it keeps it for the others.
type localOutcome struct {
	ch   chan *closedRun
	done chan struct{} // closed once r is set
	r    *closedRun    // nil: the run left this process; read the record
}

// wait returns the hand-off, or nil when the run left this process (or did
// not end within d): the caller then reads the record. A hand-off taken by
// an earlier Result call is not returned either: the run may have been
// reset since it closed, and only the record says so.
func (l *localOutcome) wait(ctx context.Context, d time.Duration) (*closedRun, error) {
	select {
	case <-l.done:
		return nil, nil
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-l.ch:
		l.r = r
		close(l.done)
		return r, nil
	case <-l.done: // a concurrent Result took it while this one waited
		return l.r, nil
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Result waits for the run to close and returns its JSON result, or the
// workflow's error (typed: errors.As works).
func (h *RunHandle) Result(ctx context.Context) (json.RawMessage, error) {
	raw, _, err := h.result(ctx)
	return raw, err
}

// result is Result, with the value the result encodes when the run ended in
// this process and handed its end to this handle (nil otherwise).
func (h *RunHandle) result(ctx context.Context) (json.RawMessage, any, error) {
	e := h.c.e
	runID := h.RunID
	if h.local != nil {
		if r, err := h.local.wait(ctx, 5*e.cfg.PollInterval); err != nil {
			return nil, nil, err
		} else if r != nil {
			switch r.status {
			case StatusCompleted:
				return r.output, r.live, nil
			case StatusFailed, StatusCancelled:
				return nil, nil, decodeError(r.errJSON)
			}
		}
	}
	// Closes elsewhere are announced only while a process waits on them:
	// register before the first read. A read before unannounced closes
	// that missed the registration have all committed is done again then.
	recheckAt, err := e.listeners.hold(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer e.listeners.release()
	why := "first" // why the read below is made (tests log it)
	for {
		ch := e.waitChan(runID, false)
		if f := e.hooks.resultRead.Load(); f != nil {
			(*f)(runID, why)
		}
		r, err := e.outcomes.read(ctx, runID)
		if err != nil || !isOpen(r.status) {
			// Registered before the read so no announcement is missed;
			// not needed once the run is seen closed.
			e.dropWaiter(runID, ch)
		}
		if err != nil {
			return nil, nil, err
		}
		if !isOpen(r.status) && r.next != "" {
			// A closed run may have been continued as new or reset (a
			// failed run is reset after its cause is fixed): the result is
			// that of the run that finally closes.
			runID = r.next
			why = "first of the successor"
			continue
		}
		switch r.status {
		case StatusCompleted:
			return r.output, nil, nil
		case StatusFailed, StatusCancelled:
			return nil, nil, decodeError(r.errJSON)
		case StatusContinued, StatusReset:
			return nil, nil, fmt.Errorf("engine: follow run %s: its %s successor is missing", runID, r.status)
		}
		poll := time.Duration(e.resultPoll.Load())
		why = "safety poll"
		if !e.listeners.up() {
			// No notice would reach this process (resultListeners.listen).
			poll = min(poll, e.cfg.PollInterval)
			why = "poll while no notice reaches this process"
		}
		if d := time.Until(recheckAt); d > 0 && d < poll {
			poll = d
			why = "recheck at the end of the registration's quiet window"
		}
		t := time.NewTimer(poll)
		select {
		case cr := <-ch:
			// The close's own commit, or its notice, may say how the run
			// ended (see doneNote); this wait began after the read above
			// saw the run open, so it is the run's latest state.
			if cr != nil && carriesOutcome(cr.status) {
				t.Stop()
				if cr.status == StatusCompleted {
					return cr.output, nil, nil
				}
				return nil, nil, decodeError(cr.errJSON)
			}
			why = "woken without the outcome"
		case <-t.C:
			e.dropWaiter(runID, ch)
		case <-ctx.Done():
			t.Stop()
			e.dropWaiter(runID, ch)
			return nil, nil, ctx.Err()
		}
		t.Stop()
	}
}

// RunInfo describes a run.
type RunInfo struct {
	WorkflowID      string
	RunID           string
	WorkflowType    string
	Queue           string
	Status          Status
	Input           json.RawMessage
	Output          json.RawMessage
	Error           error
	Headers         Headers
	CreatedAt       time.Time
	UpdatedAt       time.Time
	ClosedAt        time.Time
	WakeAt          time.Time
	CancelRequested bool
	// Loads counts how many times a worker has loaded the run.
	Loads         int
	PreviousRunID string
	// StartReason says what created the run: "start", "reset",
	// "continue_as_new" or "child".
	StartReason string
	// ResetReason is the reason given to the reset that created the run
	// (ResetOptions.Reason); empty for other runs.
	ResetReason string
	ParentRunID string
}

func toInfo(r *runRow) RunInfo {
	return RunInfo{WorkflowID: r.WorkflowID, RunID: r.RunID, WorkflowType: r.WorkflowType, Queue: r.Queue, Status: r.status(),
		Input: r.Input, Output: r.Output, Error: decodeError(r.Error), Headers: r.headers(), CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt, ClosedAt: r.ClosedAt.Time, WakeAt: r.WakeAt.Time, CancelRequested: r.CancelRequestedAt.Valid,
		Loads: r.Loads, PreviousRunID: r.PreviousRunID.String, StartReason: r.StartReason,
		ResetReason: r.ResetReason.String, ParentRunID: r.ParentRunID.String}
}

// Describe returns the latest run of a workflow ID.
func (c *Client) Describe(ctx context.Context, workflowID string) (*RunInfo, error) {
	r, err := c.e.store.latestRun(ctx, c.e.db, workflowID)
	if err != nil {
		return nil, err
	}
	info := toInfo(r)
	return &info, nil
}

// Bounds of ListFilter.Limit.
const (
	// DefaultListLimit is the number of runs List returns when Limit is zero.
	DefaultListLimit = 100
	// MaxListLimit is the largest Limit List accepts.
	MaxListLimit = 10000
)

// ListFilter selects runs for List. Zero fields do not filter.
type ListFilter struct {
	Statuses      []Status
	WorkflowType  string
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Limit defaults to DefaultListLimit (100), at most MaxListLimit (10000).
	Limit int
}

// List returns runs matching the filter, newest first.
func (c *Client) List(ctx context.Context, f ListFilter) ([]RunInfo, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultListLimit
	}
	if f.Limit > MaxListLimit {
		return nil, fmt.Errorf("engine: ListFilter.Limit %d is above %d", f.Limit, MaxListLimit)
	}
	var rows []*runRow
	q := `SELECT ` + runColumns + ` FROM ` + c.e.store.runs + `
		WHERE (COALESCE(cardinality($1::text[]), 0) = 0 OR ` + reportedStatusSQL + ` = ANY($1)) AND ($2 = '' OR workflow_type = $2)
		  AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
		ORDER BY created_at DESC, run_id DESC LIMIT $5`
	if err := c.e.db.SelectContext(ctx, &rows, q, pq.Array(f.Statuses), f.WorkflowType, nullTime(f.CreatedAfter), nullTime(f.CreatedBefore), f.Limit); err != nil {
		return nil, err
	}
	out := make([]RunInfo, len(rows))
	for i, r := range rows {
		out[i] = toInfo(r)
	}
	return out, nil
}

// StepInfo is one recorded step of a run.
type StepInfo struct {
	Seq             int
	Kind            string
	Name            string
	Status          string
	Attempts        int
	StartedAt       time.Time
	CompletedAt     time.Time
	Duration        time.Duration
	Input           json.RawMessage
	Output          json.RawMessage
	Error           error
	ChildWorkflowID string
	// NextAttemptAt is when an activity step waiting for its next attempt
	// (status "retrying" after a failure, "throttled" after a limiter's
	// snooze) is due; zero otherwise.
	NextAttemptAt time.Time
	// AttemptRecords are an activity step's attempts in order, each with
	// its start, end and error, the attempts lost with their worker, and
	// the limiter's snoozes (see AttemptRecord).
	AttemptRecords []AttemptRecord
}

// RunHistory is a run and its steps.
type RunHistory struct {
	Run   RunInfo
	Steps []StepInfo
}

// History returns every run of a workflow ID, oldest first, each with its
// steps, timings, attempts and errors. Runs created by reset or
// continue-as-new appear after the run they replaced.
func (c *Client) History(ctx context.Context, workflowID string) ([]RunHistory, error) {
	var rows []*runRow
	if err := c.e.db.SelectContext(ctx, &rows, `SELECT `+runColumns+` FROM `+c.e.store.runs+` WHERE workflow_id = $1 ORDER BY created_at, run_id`, workflowID); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, workflowID)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.RunID
	}
	hist, err := c.e.store.loadHistoriesWithAttempts(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]RunHistory, len(rows))
	now := c.e.cfg.Clock.Now()
	for i, r := range rows {
		out[i].Run = toInfo(r)
		// A timer is recorded once, when it is set: replay needs only its
		// fire time. It shows as completed once that time has come, within
		// the run's life.
		until := now
		if r.ClosedAt.Valid && r.ClosedAt.Time.Before(until) {
			until = r.ClosedAt.Time
		}
		for _, st := range hist[r.RunID] {
			si := stepInfo(st)
			if st.Kind == stepTimer && st.Status == stepStarted && st.FireAt.Valid && !st.FireAt.Time.After(until) {
				si.Status, si.CompletedAt = stepCompleted, st.FireAt.Time
			}
			out[i].Steps = append(out[i].Steps, si)
		}
	}
	return out, nil
}

// RunStep returns step seq of run runID as History shows it, with its
// attempts; ErrNotFound when there is none.
func (c *Client) RunStep(ctx context.Context, runID string, seq int) (*StepInfo, error) {
	var st historyStep
	err := c.e.db.GetContext(ctx, &st, `SELECT `+stepColumns+`, attempt_log FROM `+c.e.store.steps+`
		WHERE run_id = $1 AND seq = $2`, runID, seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: step %d of run %s", ErrNotFound, seq, runID)
	}
	if err != nil {
		return nil, err
	}
	si := stepInfo(&st)
	return &si, nil
}

// stepInfo is a step's record as History shows it.
func stepInfo(st *historyStep) StepInfo {
	si := StepInfo{Seq: st.Seq, Kind: st.Kind, Name: st.Name, Status: st.Status, Attempts: st.Attempts,
		StartedAt: st.StartedAt.Time, CompletedAt: st.CompletedAt.Time, Input: st.Input, Output: st.Output,
		Error: decodeError(st.Error), ChildWorkflowID: st.ChildWorkflowID.String, NextAttemptAt: st.NextAttemptAt.Time,
		AttemptRecords: attemptRecords(&st.stepRow, st.AttemptLog)}
	if st.CompletedAt.Valid && st.StartedAt.Valid {
		si.Duration = st.CompletedAt.Time.Sub(st.StartedAt.Time)
	}
	return si
}

// Signal sends a named signal to the open run of a workflow ID. Signals are
// durable and buffered until the workflow reads them.
func (c *Client) Signal(ctx context.Context, workflowID, name string, payload any) error {
	_, err := c.call(ctx, &ClientCallInput{Kind: ClientSignal, WorkflowID: workflowID, Name: name, Args: payload},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			return nil, c.signal(ctx, in.WorkflowID, in.Name, in.Args, in.Headers)
		})
	return err
}

func (c *Client) signal(ctx context.Context, workflowID, name string, payload any, headers Headers) error {
	if name == "" {
		return fmt.Errorf("engine: signal name is empty")
	}
	b, err := c.e.encodePayload("signal "+name, payload)
	if err != nil {
		return err
	}
	tx, err := c.e.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	runID, err := c.deliverSignal(ctx, tx, workflowID, name, b, headersJSON(headers))
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	c.e.dispatchWake([]string{runID})
	return nil
}

func (c *Client) deliverSignal(ctx context.Context, tx *sqlx.Tx, workflowID, name string, b, headers []byte) (string, error) {
	s := c.e.store
	var runID string
	err := tx.QueryRowContext(ctx, `UPDATE `+s.runs+` SET event_seq = event_seq + 1,
		wake_at = CASE WHEN status = 'waiting' THEN $2 ELSE wake_at END
		WHERE workflow_id = $1 AND status IN ('pending','running','waiting') RETURNING run_id`, workflowID, c.e.cfg.Clock.Now()).Scan(&runID)
	if errors.Is(err, sql.ErrNoRows) {
		latest, lerr := s.latestRun(ctx, tx, workflowID)
		if lerr != nil {
			return "", lerr
		}
		if !isOpen(latest.Status) {
			return "", fmt.Errorf("%w: %q", ErrNotRunning, workflowID)
		}
		// The open run was created (continue-as-new, reset) by a transaction
		// that committed while the update waited on the run it replaced;
		// the update's snapshot did not see it. Signal it by its ID.
		err = tx.QueryRowContext(ctx, `UPDATE `+s.runs+` SET event_seq = event_seq + 1,
			wake_at = CASE WHEN status = 'waiting' THEN $2 ELSE wake_at END
			WHERE run_id = $1 AND status IN ('pending','running','waiting') RETURNING run_id`, latest.RunID, c.e.cfg.Clock.Now()).Scan(&runID)
		if errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("%w: %q", ErrNotRunning, workflowID)
		}
	}
	if err != nil {
		return "", err
	}
	if err := s.insertSignal(ctx, tx, runID, name, b, headers); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, s.channel[chanWake], runID); err != nil {
		return "", err
	}
	return runID, nil
}

// SignalWithStart signals the open run of opts.ID, or, if no run is open,
// starts the workflow with in and the signal already buffered, in the
// transaction that creates the run. Client interceptors see a signal call
// (and, when a run is started, a start call within it).
func (w *Workflow[In, Out]) SignalWithStart(ctx context.Context, c *Client, in In, opts *StartOptions, signal string, payload any) (*Run[Out], error) {
	if opts == nil || opts.ID == "" {
		return nil, fmt.Errorf("engine: SignalWithStart needs StartOptions.ID")
	}
	if signal == "" {
		return nil, fmt.Errorf("engine: signal name is empty")
	}
	out, err := c.call(ctx, &ClientCallInput{Kind: ClientSignal, WorkflowID: opts.ID, WorkflowType: w.name, Name: signal, Args: payload},
		func(ctx context.Context, ci *ClientCallInput) (any, error) {
			return w.signalWithStart(ctx, c, in, opts, ci.Name, ci.Args, ci.Headers)
		})
	if err != nil {
		return nil, err
	}
	return out.(*Run[Out]), nil
}

func (w *Workflow[In, Out]) signalWithStart(ctx context.Context, c *Client, in In, opts *StartOptions, signal string, payload any, headers Headers) (*Run[Out], error) {
	b, err := c.e.encodePayload("signal "+signal, payload)
	if err != nil {
		return nil, err
	}
	h := headersJSON(headers)
	var startErr error
	for attempt := 0; attempt < 3; attempt++ {
		tx, err := c.e.db.BeginTxx(ctx, nil)
		if err != nil {
			return nil, err
		}
		runID, err := c.deliverSignal(ctx, tx, opts.ID, signal, b, h)
		if err == nil {
			if err = tx.Commit(); err != nil {
				return nil, err
			}
			c.e.dispatchWake([]string{runID})
			return &Run[Out]{RunHandle{WorkflowID: opts.ID, RunID: runID, c: c}}, nil
		}
		tx.Rollback()
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNotRunning) {
			return nil, err
		}
		if startErr != nil {
			// The start was refused and no run is open: the ID reuse
			// policy, not a race, refused it.
			return nil, startErr
		}
		o := *opts
		o.ConflictPolicy = ConflictFail
		o.signal = &startSignal{name: signal, payload: b, headers: h}
		run, err := w.Start(ctx, c, in, &o)
		if errors.Is(err, ErrAlreadyStarted) {
			startErr = err
			continue // raced with another start: signal the winner
		}
		if err != nil {
			return nil, err
		}
		return run, nil
	}
	return nil, fmt.Errorf("engine: SignalWithStart %q: gave up after repeated start races", opts.ID)
}

// Cancel requests cancellation of the open run of a workflow ID (and of the
// children it waits on). The workflow's context is cancelled at its next
// step, its running activities' contexts at once. Cancelling a run that is
// already cancelled is harmless and returns nil.
func (c *Client) Cancel(ctx context.Context, workflowID, reason string) error {
	_, err := c.call(ctx, &ClientCallInput{Kind: ClientCancel, WorkflowID: workflowID, Args: reason},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			return nil, c.cancel(ctx, in.WorkflowID, reason)
		})
	return err
}

func (c *Client) cancel(ctx context.Context, workflowID, reason string) error {
	return c.againOnConflict(ctx, func() error { return c.cancelOnce(ctx, workflowID, reason) })
}

// againOnConflict runs f, a transaction of the client's own, again when
// it is rolled back by a deadlock or a serialization failure, up to
// contentionRetries times in all. Each statement locks its runs in run ID
// order (see Lock order in store.go), and a cancel or a reset locks the
// runs of a tree in one statement, as a commit that closes a child and
// wakes its parent does (committer.lockTree): the client's transactions
// do not deadlock with the engine's own. A transaction that locks runs
// one set after another still can (TestCancelRetriesADeadlock stands in
// for one; ResetManyTx locks its runs, then their children), and so can a
// commit whose child a reset gave to a new run after the commit's
// statement read the child's parent and before it locked the child: it
// locks the new parent late.
// A Tx call's transaction is its caller's, who runs it again.
//
// It pauses before each new attempt (conflictPause): the transaction that
// won the deadlock was waiting for this one's locks, and must be scheduled
// to take them once they are released. Run again at once (a rollback, a
// BEGIN and the statement: three round trips), a cancel that crossed a
// commit locking a child and then its parent (as every commit did before
// lockTree) locked the parent again first on a loaded machine and
// deadlocked with the same commit each time (TestCancelRetriesADeadlock,
// 1 run in 10 at load 6).
func (c *Client) againOnConflict(ctx context.Context, f func() error) error {
	attempts := contentionRetries
	if n := c.e.clientConflictAttempts; n > 0 {
		attempts = n
	}
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || attempt >= attempts || !IsConflict(err) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(conflictPause(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// conflictPause is the pause before attempt n+1 of a client transaction
// that met a deadlock or a serialization failure: 50 ms, then 100 ms, far
// past a woken backend's wait for a core, short against the second a
// deadlock takes to be found (deadlock_timeout).
func conflictPause(n int) time.Duration { return 50 * time.Millisecond << min(n-1, 4) }

func (c *Client) cancelOnce(ctx context.Context, workflowID, reason string) error {
	tx, err := c.e.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ids, err := c.requestCancel(ctx, tx, workflowID, reason)
	if err != nil || len(ids) == 0 {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	c.e.dispatchWake(ids)
	return nil
}

// requestCancel marks the open run of workflowID and its cancel-policy
// children cancel-requested in tx, with a wake-up sent on commit. It returns
// the runs it marked (none when the run is already cancelled).
func (c *Client) requestCancel(ctx context.Context, tx *sqlx.Tx, workflowID, reason string) ([]string, error) {
	s := c.e.store
	var ids []string
	var err error
	for attempt := 0; len(ids) == 0; attempt++ {
		// The tree is locked in run ID order (see Lock order in store.go).
		// The status is checked again when a run's lock is taken: a run that
		// closed (continued as new, reset) while this waited for its lock is
		// skipped, and the next statement sees the run that replaced it.
		err = collectIDs(ctx, tx, `WITH RECURSIVE tree AS (
				SELECT run_id FROM `+s.runs+` WHERE workflow_id = $1 AND status IN ('pending','running','waiting')
				UNION
				SELECT c.run_id FROM `+s.runs+` c JOIN tree t ON c.parent_run_id = t.run_id
				WHERE c.parent_close_policy = 'cancel' AND c.status IN ('pending','running','waiting')),
			lk AS (SELECT r.run_id FROM `+s.runs+` r JOIN tree ON r.run_id = tree.run_id
				WHERE r.status IN ('pending','running','waiting') ORDER BY r.run_id FOR NO KEY UPDATE OF r)
			UPDATE `+s.runs+` r SET cancel_requested_at = COALESCE(r.cancel_requested_at, now()),
				cancel_reason = COALESCE(r.cancel_reason, $2), event_seq = r.event_seq + 1,
				wake_at = CASE WHEN r.status IN ('waiting','pending') THEN $3 ELSE r.wake_at END
			FROM lk WHERE r.run_id = lk.run_id
			RETURNING r.run_id`, []any{workflowID, reason, c.e.cfg.Clock.Now()},
			func(id string) { ids = append(ids, id) })
		if err != nil {
			return nil, err
		}
		if len(ids) > 0 {
			break
		}
		r, err := s.latestRun(ctx, tx, workflowID)
		if err != nil {
			return nil, err
		}
		if r.Status == StatusCancelled {
			return nil, nil
		}
		if !isOpen(r.Status) || attempt == 2 {
			return nil, fmt.Errorf("%w: %q is %s", ErrNotRunning, workflowID, r.Status)
		}
	}
	if err := s.notifyIDs(ctx, tx.Tx, chanWake, ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// ResetOptions choose where a reset cuts the record. Exactly one of the
// fields must be set.
type ResetOptions struct {
	// BeforeLastFailedActivity re-executes from the last failed activity.
	BeforeLastFailedActivity bool
	// BeforeStep re-executes from the first step with this name.
	BeforeStep string
	// BeforeSeq re-executes from this step number.
	BeforeSeq int
	// Reason is recorded on the new run.
	Reason string
}

// Reset starts a new run of the workflow that reuses the latest run's record
// up to the chosen point and executes live from there. An open latest run is
// closed as "reset". Buffered signals move to the new run. It returns the
// new run's handle.
func (c *Client) Reset(ctx context.Context, workflowID string, opts ResetOptions) (*RunHandle, error) {
	res, err := c.call(ctx, &ClientCallInput{Kind: ClientReset, WorkflowID: workflowID, Args: opts},
		func(ctx context.Context, in *ClientCallInput) (any, error) { return c.reset(ctx, in.WorkflowID, opts) })
	if err != nil {
		return nil, err
	}
	return res.(*RunHandle), nil
}

// check refuses options that do not name exactly one reset point.
func (o ResetOptions) check() error {
	set := 0
	for _, b := range []bool{o.BeforeLastFailedActivity, o.BeforeStep != "", o.BeforeSeq > 0} {
		if b {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("engine: ResetOptions: set exactly one of BeforeLastFailedActivity, BeforeStep, BeforeSeq")
	}
	return nil
}

func (c *Client) reset(ctx context.Context, workflowID string, opts ResetOptions) (h *RunHandle, err error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	err = c.againOnConflict(ctx, func() error {
		h, err = c.resetOnce(ctx, workflowID, opts)
		return err
	})
	return h, err
}

func (c *Client) resetOnce(ctx context.Context, workflowID string, opts ResetOptions) (*RunHandle, error) {
	tx, err := c.e.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	h, err := c.resetIn(ctx, tx, workflowID, opts)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	c.e.pokeWorkers()
	return h, nil
}

// resetIn makes the reset's new run in tx; the caller commits. A closed
// latest run (the common case: relaunching a failed operation, which bulk
// relaunches do thousands of times) is reset in one statement; an open one
// in three.
func (c *Client) resetIn(ctx context.Context, tx *sqlx.Tx, workflowID string, opts ResetOptions) (*RunHandle, error) {
	s := c.e.store
	// $1 the workflow ID, $2 the new run's ID, $3 now, $4 the reason, $5
	// the work channel, $6 the reset point's argument.
	newID, now := newRunID(), c.e.cfg.Clock.Now()
	cut, args := opts.cutSQL(s, []any{workflowID, newID, now, nullString(opts.Reason), s.channel[chanWork]})
	// The latest run, locked, with the reset point; when it is closed and
	// has that point, the new run is made from it in the same statement.
	// It is locked with the open children the reset hands to the new run,
	// in run ID order (see Lock order in store.go): a run that adopted
	// children older than itself (made by a reset or a continue-as-new)
	// locked before them crossed a commit that closes such a child and
	// wakes it. The status is the one the lock found.
	var old struct {
		RunID  string        `db:"run_id"`
		Status Status        `db:"status"`
		Cut    sql.NullInt64 `db:"cut"`
		Made   bool          `db:"made"`
	}
	err := tx.GetContext(ctx, &old, `WITH latest AS (SELECT r.run_id FROM `+s.runs+` r WHERE r.workflow_id = $1
			ORDER BY (r.status IN ('pending','running','waiting')) DESC, r.created_at DESC, r.run_id DESC LIMIT 1),
		lk AS (SELECT x.run_id, x.status FROM `+s.runs+` x
			WHERE x.run_id = (SELECT run_id FROM latest)
			   OR (x.parent_run_id = (SELECT run_id FROM latest) AND x.status IN ('pending','running','waiting'))
			ORDER BY x.run_id FOR UPDATE OF x),
		old AS (SELECT r.run_id, lk.status, `+cut+` AS cut FROM `+s.runs+` r JOIN lk ON lk.run_id = r.run_id
			WHERE r.run_id = (SELECT run_id FROM latest)),
		ok AS (SELECT run_id, cut, $2::text AS new_run_id FROM old WHERE cut IS NOT NULL AND status NOT IN ('pending','running','waiting')),
		`+c.resetCopySQL()+`
		SELECT old.run_id, old.status, old.cut, EXISTS (SELECT 1 FROM made) AS made FROM old`, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, workflowID)
	}
	if err != nil {
		return nil, c.resetErr(err, workflowID)
	}
	if !old.Cut.Valid {
		return nil, fmt.Errorf("%w: run %s of %q has no step matching the reset point", ErrNotFound, old.RunID, workflowID)
	}
	if !old.Made {
		if err := c.resetOpen(ctx, tx, workflowID, newID, now, opts.Reason, old.RunID, old.Cut.Int64); err != nil {
			return nil, err
		}
	}
	return &RunHandle{WorkflowID: workflowID, RunID: newID, c: c}, nil
}

// resetOpen resets workflowID's open latest run oldRunID at step cut,
// making run newID in tx. The old run is closed before the new run is
// inserted (one open run per ID); Result calls waiting on it move on to
// the new one.
func (c *Client) resetOpen(ctx context.Context, tx *sqlx.Tx, workflowID, newID string, now time.Time, reason, oldRunID string, cut int64) error {
	s := c.e.store
	if _, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` SET status = 'reset', closed_at = $2, updated_at = now(),
		lease_owner = NULL WHERE run_id = $1 RETURNING pg_notify($3, run_id)`, oldRunID, now, s.channel[chanDone]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `WITH ok AS (SELECT $6::text AS run_id, $7::bigint AS cut, $2::text AS new_run_id WHERE $1::text IS NOT NULL),
		`+c.resetCopySQL()+` SELECT 1`, workflowID, newID, now, nullString(reason), s.channel[chanWork], oldRunID, cut); err != nil {
		return c.resetErr(err, workflowID)
	}
	return nil
}

// resetCopySQL makes the new run of each run in CTE "ok" (run_id, cut,
// new_run_id), created at $3 with reason $4: its record up to the cut, the
// signals the old run has not read, and the children the old run still
// waits on, which now report to the new run (one started after the cut is taken on again
// when the new run starts it with the same ID at the same step, see the
// committer); they are locked in run ID order (see Lock order in
// store.go). The old run is superseded, and the queue's workers are
// notified on channel $5. It yields CTE "made" (a row when it made the run).
func (c *Client) resetCopySQL() string {
	s := c.e.store
	return `nr AS (INSERT INTO ` + s.runs + ` (run_id, workflow_id, workflow_type, queue, status, input, headers, wake_at,
			parent_run_id, parent_seq, parent_close_policy, previous_run_id, start_reason, reset_reason)
		SELECT ok.new_run_id, r.workflow_id, r.workflow_type, r.queue, 'pending', r.input, r.headers, $3, r.parent_run_id, r.parent_seq,
			r.parent_close_policy, r.run_id, 'reset', $4
		FROM ` + s.runs + ` r JOIN ok ON r.run_id = ok.run_id RETURNING queue),
	sup AS (UPDATE ` + s.runs + ` x SET superseded = true FROM ok WHERE x.run_id = ok.run_id),
	st AS (INSERT INTO ` + s.steps + ` (` + stepColumns + `, attempt_log)
		SELECT ok.new_run_id, t.seq, t.kind, t.name, t.status, t.input, t.output, t.error, t.attempts, t.started_at, t.completed_at, t.fire_at,
			t.signal_id, t.child_workflow_id, t.attempt_started_at, t.next_attempt_at, t.attempt_log
		FROM ` + s.steps + ` t JOIN ok ON t.run_id = ok.run_id WHERE t.seq < ok.cut),
	sg AS (UPDATE ` + s.signals + ` g SET run_id = ok.new_run_id FROM ok WHERE g.run_id = ok.run_id),
	chl AS (SELECT k.run_id, ok.new_run_id FROM ` + s.runs + ` k JOIN ok ON k.parent_run_id = ok.run_id
		WHERE k.status IN ('pending','running','waiting') ORDER BY k.run_id FOR NO KEY UPDATE OF k),
	ch AS (UPDATE ` + s.runs + ` k SET parent_run_id = chl.new_run_id FROM chl WHERE k.run_id = chl.run_id),
	made AS (SELECT pg_notify($5, queue) FROM nr)`
}

// resetErr translates a reset's insert conflict.
func (c *Client) resetErr(err error, workflowID string) error {
	if pe, ok := err.(*pq.Error); ok && pe.Code == "23505" {
		return fmt.Errorf("%w: %q has another open run", ErrAlreadyStarted, workflowID)
	}
	return err
}

// Query answers a query by replaying the latest run's record in this
// process (which must have the workflow registered) and calling the handler
// the workflow set. It works whether the run is loaded, unloaded or closed.
func (c *Client) Query(ctx context.Context, workflowID, name string, args any) (json.RawMessage, error) {
	res, err := c.call(ctx, &ClientCallInput{Kind: ClientQuery, WorkflowID: workflowID, Name: name, Args: args},
		func(ctx context.Context, in *ClientCallInput) (any, error) {
			return c.query(ctx, in.WorkflowID, in.Name, in.Args)
		})
	if err != nil {
		return nil, err
	}
	return res.(json.RawMessage), nil
}

// QueryAs is Query with the answer decoded into T.
func QueryAs[T any](ctx context.Context, c *Client, workflowID, name string, args any) (T, error) {
	var v T
	raw, err := c.Query(ctx, workflowID, name, args)
	if err != nil {
		return v, err
	}
	err = json.Unmarshal(raw, &v)
	return v, err
}

func (c *Client) query(ctx context.Context, workflowID, name string, args any) (json.RawMessage, error) {
	e := c.e
	r, err := e.store.latestRun(ctx, e.db, workflowID)
	if err != nil {
		return nil, err
	}
	def := e.reg.workflows[r.WorkflowType]
	if def == nil {
		return nil, fmt.Errorf("%w: %q is not registered in this process", ErrUnknownWorkflow, r.WorkflowType)
	}
	hist, err := e.store.loadHistories(ctx, []string{r.RunID})
	if err != nil {
		return nil, err
	}
	sigs, err := e.store.loadSignals(ctx, []string{r.RunID}, 0)
	if err != nil {
		return nil, err
	}
	argBytes, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("%w: query argument: %v", ErrBadInput, err)
	}
	ch := e.chains
	s := newRunState(e, nil, modeQuery, r, def, &ch, hist[r.RunID], sigs[r.RunID])
	go s.main()
	select {
	case <-s.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h := s.queries[name]
	if h == nil {
		return nil, fmt.Errorf("%w: %q on workflow %q", ErrUnknownQuery, name, workflowID)
	}
	out, err := compose(ch.query, wrapQuery, QueryNext(func(_ context.Context, in *HandleQueryInput) (any, error) { return h(in.Args) }))(ctx,
		&HandleQueryInput{Info: s.info, Name: name, Args: argBytes})
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}
