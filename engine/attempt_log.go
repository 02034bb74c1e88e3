package engine

import (
	"encoding/json"
	"time"
)

// AttemptRecord is one attempt of an activity step, or one snooze of it by
// a limiter (which is no attempt: Snoozed is set and Attempt is the number
// of the attempt that was put off).
type AttemptRecord struct {
	// Attempt numbers attempts from 1.
	Attempt int
	// StartedAt and EndedAt bound the attempt on the engine's clock. EndedAt
	// is zero while it is in flight; for a lost attempt it is when another
	// worker found it lost.
	StartedAt time.Time
	EndedAt   time.Time
	// Error is the attempt's failure, nil when it succeeded or is in flight.
	Error error
	// Lost is set for an attempt that was in flight when its worker stopped
	// (a crash, a SIGKILL, a lost lease): its outcome is unknown.
	Lost bool
	// Snoozed is set for a limiter's snooze, with its Reason; Snoozes counts
	// the snoozes in a row this record stands for (1 or more).
	Snoozed bool
	Reason  string
	Snoozes int
	// NextAttemptAt is when the attempt after a failure or a snooze was due.
	NextAttemptAt time.Time
	// MaxAttempts is the retry policy's MaximumAttempts the attempt ran
	// under (0: unlimited).
	MaxAttempts int
}

// ActivityOptions returns the options an activity registered on e was
// defined with (its calls may override them); ok is false when no activity
// of the name is registered.
func (e *Engine) ActivityOptions(name string) (opts ActivityOptions, ok bool) {
	def := e.reg.activities[name]
	if def == nil {
		return ActivityOptions{}, false
	}
	return def.defaults(), true
}

// attemptEntry is an AttemptRecord as kept in a step's attempt_log. A step
// that succeeds on its first attempt has no log: its record describes its
// one attempt. An attempt that ended and was followed by another one (a
// retry, an attempt lost with its worker) or by a wait is appended by the
// write that records what follows, so the log costs no write of its own.
type attemptEntry struct {
	Attempt   int             `json:"attempt"`
	StartedAt time.Time       `json:"started_at"`
	EndedAt   time.Time       `json:"ended_at"`
	Error     json.RawMessage `json:"error,omitempty"`
	Lost      bool            `json:"lost,omitempty"`
	Snoozed   bool            `json:"snoozed,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Snoozes   int             `json:"snoozes,omitempty"`
	Next      *time.Time      `json:"next_attempt_at,omitempty"`
	Max       int             `json:"max_attempts,omitempty"`
}

// attemptLog gathers the entries of one activity step not yet written.
type attemptLog struct{ pending []attemptEntry }

// add appends e. A snooze following a snooze of the same attempt for the
// same reason extends it instead, so a long throttle is one entry.
func (l *attemptLog) add(e attemptEntry) {
	if n := len(l.pending); n > 0 && e.Snoozed {
		last := &l.pending[n-1]
		if last.Snoozed && last.Attempt == e.Attempt && last.Reason == e.Reason {
			last.EndedAt, last.Next = e.EndedAt, e.Next
			last.Snoozes++
			return
		}
	}
	if e.Snoozed {
		e.Snoozes = 1
	}
	l.pending = append(l.pending, e)
}

// take returns the pending entries as a JSON array (nil for none) and
// forgets them: the write that carries them appends them.
func (l *attemptLog) take() []byte {
	if len(l.pending) == 0 {
		return nil
	}
	b := mustJSON(l.pending)
	l.pending = nil
	return b
}

// joinLogs concatenates two JSON arrays of entries.
func joinLogs(a, b []byte) []byte {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]byte, 0, len(a)+len(b))
	out = append(out, a[:len(a)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...)
}

// attemptRecords lists an activity step's attempts: those in its log, and
// the one its record describes (the last, or the one in flight) unless
// the log has it already.
func attemptRecords(st *stepRow, log []byte) []AttemptRecord {
	if st.Kind != stepActivity {
		return nil
	}
	var entries []attemptEntry
	if len(log) > 0 {
		_ = json.Unmarshal(log, &entries)
	}
	out := make([]AttemptRecord, 0, len(entries)+1)
	logged := map[int]bool{}
	for _, e := range entries {
		r := AttemptRecord{Attempt: e.Attempt, StartedAt: e.StartedAt, EndedAt: e.EndedAt, Lost: e.Lost,
			Snoozed: e.Snoozed, Reason: e.Reason, Snoozes: e.Snoozes, MaxAttempts: e.Max}
		if len(e.Error) > 0 {
			r.Error = decodeError(e.Error)
		}
		if e.Next != nil {
			r.NextAttemptAt = *e.Next
		}
		if !e.Snoozed {
			logged[e.Attempt] = true
		}
		out = append(out, r)
	}
	if st.Attempts == 0 || logged[st.Attempts] || st.NextAttemptAt.Valid {
		return out
	}
	r := AttemptRecord{Attempt: st.Attempts, StartedAt: st.StartedAt.Time}
	if len(out) > 0 {
		r.MaxAttempts = out[len(out)-1].MaxAttempts
	}
	if st.AttemptStartedAt.Valid {
		r.StartedAt = st.AttemptStartedAt.Time
	}
	if st.Status == stepCompleted || st.Status == stepFailed {
		r.EndedAt = st.CompletedAt.Time
		r.Error = decodeError(st.Error)
	}
	return append(out, r)
}
