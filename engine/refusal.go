package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// What the engine does when a checkpoint interceptor refuses a write that is
// not an activity's outcome (a run's end, a timer, a signal, a child start):
// the run is given back and resumed from its record after a pause that
// doubles with each refusal in a row (100 ms up to a minute), and the
// refusal is kept on the run (its error, type ErrorTypeCheckpointRefused,
// with the count in its details), so Describe shows why it is not moving.
// After Config.CheckpointRefusalLimit refusals in a row the run fails with
// an ErrorTypeNeedsOperator error holding the last refusal: a legacy table
// that refuses for good cannot keep a run looping, and an operator sees it,
// fixes the legacy side and resets the run. That failure is recorded
// without asking the checkpoint interceptors (they are what refuses).
// A transition the run writes (it waits, it ends) clears the count.

// writeRefused is a checkpoint interceptor's refusal of a write that was
// not (only) activity outcomes.
type writeRefused struct{ err error }

func (e *writeRefused) Error() string { return e.err.Error() }
func (e *writeRefused) Unwrap() error { return e.err }

// refusalDetails are the details of a run's CheckpointRefused error.
type refusalDetails struct {
	Refusals int `json:"refusals"`
}

// refusalsOf reads the count of refusals in a row from a run's error column.
func refusalsOf(errJSON []byte) int {
	if len(errJSON) == 0 {
		return 0
	}
	var app *ApplicationError
	if !errors.As(decodeError(errJSON), &app) || app.Type != ErrorTypeCheckpointRefused {
		return 0
	}
	var d refusalDetails
	_ = json.Unmarshal(app.Details, &d)
	return d.Refusals
}

// refusalPause is the wait before the run is resumed after its nth refusal
// in a row.
func refusalPause(n int) time.Duration {
	if n > 10 {
		return time.Minute
	}
	return min(time.Minute, (100*time.Millisecond)<<max(n-1, 0))
}

// dropRefused gives the run back after its write was refused (err is the
// interceptor's error), counting the refusal on the run.
func (s *runState) dropRefused(err error) {
	n := s.refusals + 1
	var ce *checkpointError
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.err.Error()
	}
	app := NewApplicationError(ErrorTypeCheckpointRefused, msg, refusalDetails{Refusals: n})
	wake := s.e.cfg.Clock.Now().Add(refusalPause(n))
	if n >= s.e.cfg.CheckpointRefusalLimit {
		wake = s.e.cfg.Clock.Now() // resumed at once, to fail (see parkRefused)
	}
	s.e.cfg.Logger.Warn("engine: a checkpoint interceptor refused a write of the run; resuming it later",
		"run_id", s.row.RunID, "refusals", n, "limit", s.e.cfg.CheckpointRefusalLimit, "err", msg)
	if s.abandonFirst() {
		s.e.commit.releaseLater(s.fence(), s.row.RunID, wake, encodeError(app))
	}
}

// parkError is the error a run fails with once its writes were refused
// CheckpointRefusalLimit times in a row.
func (s *runState) parkError() error {
	cause := decodeError(s.row.Error)
	msg := cause.Error()
	var app *ApplicationError
	if errors.As(cause, &app) {
		msg = app.Message
	}
	e := NewNeedsOperatorError(fmt.Sprintf("a checkpoint interceptor refused the run's writes %d times in a row "+
		"(Config.CheckpointRefusalLimit); the last refusal: %s; reset the run once its cause is fixed", s.refusals, msg),
		refusalDetails{Refusals: s.refusals})
	e.Cause = cause
	return e
}
