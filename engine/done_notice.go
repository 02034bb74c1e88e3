package engine

import (
	"encoding/base64"
	"strings"
)

// A closed run's notice carries its outcome when the outcome is small, so
// that a Result call waiting on it in another process (a client of
// separate workers) returns it without reading the run again: with the
// read, every workflow started and awaited across a process boundary cost
// two outcome reads (one when the wait began, one after the notice); the
// second was the most frequent statement of bench -workers.
//
// An entry of a done notice's payload (entries are comma-separated) is a
// run ID alone, or, with the outcome,
//
//	runID:status:base64(output):base64(error)
//
// Run IDs (UUIDs) hold neither ',' nor ':', and standard base64 neither.
// A listener of an older version takes an entry with an outcome for an
// unknown run ID and wakes nothing: its waiter reads the run at its safety
// poll (resultSafetyPoll).
const (
	// doneOutcomeMax bounds the output and error bytes a notice carries
	// for one run; a larger outcome is read by the waiter. It keeps most
	// notices to a few runs' outcomes per notification, far below the
	// payload limit.
	doneOutcomeMax = 512
	doneSep        = ":"
)

// doneNote is a closed run to announce: its ID and, from the commit that
// closed it, how it ended.
type doneNote struct {
	runID string
	fin   *finishSpec
}

// entry renders the note as one entry of a done notice's payload.
func (d doneNote) entry() string {
	f := d.fin
	if f == nil || !carriesOutcome(f.status) || len(f.output)+len(f.errJSON) > doneOutcomeMax {
		return d.runID
	}
	enc := base64.StdEncoding
	var b strings.Builder
	b.Grow(len(d.runID) + len(f.status) + 3 + enc.EncodedLen(len(f.output)) + enc.EncodedLen(len(f.errJSON)))
	b.WriteString(d.runID)
	b.WriteString(doneSep)
	b.WriteString(string(f.status))
	b.WriteString(doneSep)
	b.WriteString(enc.EncodeToString(f.output))
	b.WriteString(doneSep)
	b.WriteString(enc.EncodeToString(f.errJSON))
	return b.String()
}

// carriesOutcome: a run closed with status ends a Result call's wait (a
// continued or reset run is followed to its successor, which only the
// record names).
func carriesOutcome(status Status) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusCancelled
}

// joinDone renders notes as the payloads of done notices.
func joinDone(notes []doneNote) []string {
	entries := make([]string, len(notes))
	for i, d := range notes {
		entries[i] = d.entry()
	}
	return joinIDs(entries)
}

// doneEntry splits an entry of a done notice into its run ID and the rest
// (the encoded outcome, or "").
func doneEntry(entry string) (runID, outcome string) {
	runID, outcome, _ = strings.Cut(entry, doneSep)
	return runID, outcome
}

// decodeOutcome decodes an entry's outcome; nil when it carries none or is
// malformed (the waiter then reads the run).
func decodeOutcome(s string) *closedRun {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, doneSep)
	if len(parts) != 3 || !carriesOutcome(Status(parts[0])) {
		return nil
	}
	out, err := base64.StdEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	errJSON, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil
	}
	r := &closedRun{status: Status(parts[0])}
	if len(out) > 0 {
		r.output = out
	}
	if len(errJSON) > 0 {
		r.errJSON = errJSON
	}
	return r
}

// dispatchDoneNotice wakes the waiters of the runs a done notice from
// another process (or this one) announces, handing each the outcome the
// notice carries; an entry's outcome is decoded only when the run has a
// waiter here.
func (e *Engine) dispatchDoneNotice(payload string) {
	entries := strings.Split(payload, ",")
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, entry := range entries {
		id, outcome := doneEntry(entry)
		if len(e.waiters[id]) == 0 {
			continue
		}
		e.wakeWaitersLocked(id, decodeOutcome(outcome))
	}
}
