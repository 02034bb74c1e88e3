package engine

import (
	"database/sql"
	"encoding/json"
	"time"
)

// Status is a run's status, as stored. A run is open while pending, running
// or waiting; every other status closes it for good.
type Status string

// Run statuses.
const (
	// StatusPending is a run created but not yet loaded by a worker.
	StatusPending Status = "pending"
	// StatusRunning is a run a worker has loaded.
	StatusRunning Status = "running"
	// StatusWaiting is a run blocked on a timer, a signal or a child.
	StatusWaiting Status = "waiting"
	// StatusCompleted closes a run whose function returned a result.
	StatusCompleted Status = "completed"
	// StatusFailed closes a run whose function returned an error.
	StatusFailed Status = "failed"
	// StatusCancelled closes a run that ended after observing a cancellation.
	StatusCancelled Status = "cancelled"
	// StatusContinued closes a run that continued as new.
	StatusContinued Status = "continued"
	// StatusReset closes a run replaced by a reset.
	StatusReset Status = "reset"
)

// IsOpen reports whether a run in this status may still change.
func (s Status) IsOpen() bool { return isOpen(s) }

func isOpen(status Status) bool {
	return status == StatusPending || status == StatusRunning || status == StatusWaiting
}

// Step kinds as stored.
const (
	stepActivity   = "activity"
	stepTimer      = "timer"
	stepSignal     = "signal"
	stepSideEffect = "side_effect"
	stepSelect     = "select"
	stepChild      = "child"
	stepCancel     = "cancel"
	stepReady      = "ready"
)

// Step statuses as stored.
const (
	stepCompleted = "completed"
	stepFailed    = "failed"
	stepStarted   = "started"
	// An activity step waiting for its next attempt (next_attempt_at):
	// after a failure, or after a limiter's snooze.
	stepRetrying  = "retrying"
	stepThrottled = "throttled"
)

// runRow mirrors graft.runs.
type runRow struct {
	RunID        string `db:"run_id"`
	WorkflowID   string `db:"workflow_id"`
	WorkflowType string `db:"workflow_type"`
	Queue        string `db:"queue"`
	Status       Status `db:"status"`
	Input        []byte `db:"input"`
	Output       []byte `db:"output"`
	Error        []byte `db:"error"`
	Headers      []byte `db:"headers"`
	// hdr is Headers decoded, when the run was created in this process:
	// an eagerly started run need not decode what its creator encoded.
	hdr Headers
	// liveInput is the value Input encodes, when the run was created in
	// this process from it: an eagerly started run need not decode it
	// either (Workflow.inputOf).
	liveInput         any
	CreatedAt         time.Time      `db:"created_at"`
	UpdatedAt         time.Time      `db:"updated_at"`
	ClosedAt          sql.NullTime   `db:"closed_at"`
	WakeAt            sql.NullTime   `db:"wake_at"`
	LeaseOwner        sql.NullString `db:"lease_owner"`
	LeaseExpiresAt    sql.NullTime   `db:"lease_expires_at"`
	ClaimedUntil      sql.NullTime   `db:"claimed_until"`
	EventSeq          int64          `db:"event_seq"`
	CancelRequestedAt sql.NullTime   `db:"cancel_requested_at"`
	CancelReason      sql.NullString `db:"cancel_reason"`
	ParentRunID       sql.NullString `db:"parent_run_id"`
	ParentSeq         sql.NullInt64  `db:"parent_seq"`
	ParentClosePolicy sql.NullString `db:"parent_close_policy"`
	PreviousRunID     sql.NullString `db:"previous_run_id"`
	StartReason       string         `db:"start_reason"`
	ResetReason       sql.NullString `db:"reset_reason"`
	Loads             int            `db:"loads"`
}

const runColumns = `run_id, workflow_id, workflow_type, queue, status, input, output, error, headers,
	created_at, updated_at, closed_at, wake_at, lease_owner, lease_expires_at, claimed_until, event_seq,
	cancel_requested_at, cancel_reason, parent_run_id, parent_seq, parent_close_policy,
	previous_run_id, start_reason, reset_reason, loads`

// status is the run's status as the engine reports it: a pending or
// waiting run that a worker claimed is running, though its row says
// pending or waiting until the worker first renews its lease (see
// store.claimSQL).
func (r *runRow) status() Status {
	if (r.Status == StatusWaiting || r.Status == StatusPending) && r.ClaimedUntil.Valid {
		return StatusRunning
	}
	return r.Status
}

// reportedStatusSQL is runRow.status in SQL, for filters on it.
const reportedStatusSQL = `CASE WHEN status IN ('pending','waiting') AND claimed_until IS NOT NULL THEN 'running' ELSE status END`

// headers decodes the run's headers. The result is the run's own: callers
// that hand it to user code hand out a clone.
func (r *runRow) headers() Headers {
	if r.hdr != nil {
		return r.hdr
	}
	h := Headers{}
	if len(r.Headers) > 0 {
		_ = json.Unmarshal(r.Headers, &h)
	}
	return h
}

// stepRow mirrors graft.steps.
type stepRow struct {
	RunID           string         `db:"run_id"`
	Seq             int            `db:"seq"`
	Kind            string         `db:"kind"`
	Name            string         `db:"name"`
	Status          string         `db:"status"`
	Input           []byte         `db:"input"`
	Output          []byte         `db:"output"`
	Error           []byte         `db:"error"`
	Attempts        int            `db:"attempts"`
	StartedAt       sql.NullTime   `db:"started_at"`
	CompletedAt     sql.NullTime   `db:"completed_at"`
	FireAt          sql.NullTime   `db:"fire_at"`
	SignalID        sql.NullInt64  `db:"signal_id"`
	ChildWorkflowID sql.NullString `db:"child_workflow_id"`
	// AttemptStartedAt is the start of the activity attempt numbered
	// Attempts when it is not the step's first (NULL: StartedAt).
	AttemptStartedAt sql.NullTime `db:"attempt_started_at"`
	// NextAttemptAt is set while the step waits for its next attempt
	// (status retrying or throttled); no attempt is then in flight.
	NextAttemptAt sql.NullTime `db:"next_attempt_at"`
	// logAppend holds attempt records (a JSON array) that this write adds
	// to the step's attempt_log; it is never read back for replay.
	logAppend []byte
	// refused, set on an activity's outcome, gives the record to write
	// instead when a checkpoint interceptor refuses the write carrying the
	// outcome (err): the attempt failed with the interceptor's error.
	refused func(err error) (*stepRow, []*CheckpointEvent)
}

const stepColumns = `run_id, seq, kind, name, status, input, output, error, attempts,
	started_at, completed_at, fire_at, signal_id, child_workflow_id, attempt_started_at, next_attempt_at`

// signalRow mirrors graft.signals.
type signalRow struct {
	ID        int64     `db:"id"`
	RunID     string    `db:"run_id"`
	Name      string    `db:"name"`
	Payload   []byte    `db:"payload"`
	Headers   []byte    `db:"headers"`
	CreatedAt time.Time `db:"created_at"`
}

// headersJSON encodes headers for a nullable column: none is NULL.
func headersJSON(h Headers) []byte {
	if len(h) == 0 {
		return nil
	}
	return marshalHeaders(h)
}

// nullJSON is a JSON column parameter: NULL for none, else text (with
// binary_parameters a byte slice would be sent as jsonb's binary format).
func nullJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// decodeHeaders reads a nullable headers column; NULL or bad JSON is none.
func decodeHeaders(b []byte) Headers {
	if len(b) == 0 {
		return nil
	}
	var h Headers
	if json.Unmarshal(b, &h) != nil {
		return nil
	}
	return h
}

func nullTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }
func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func nullInt(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: true} }

// size is what the step adds to its run's record size (see
// Config.HistorySizeLimit).
func (r *stepRow) size() int64 { return int64(len(r.Input) + len(r.Output) + len(r.Error)) }
