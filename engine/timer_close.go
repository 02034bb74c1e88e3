package engine

import "time"

// stepAbandoned is the status of a timer step whose run closed before it
// fired: nothing will fire it. A replay reads a timer's fire time, never
// its status, so the status is for people (History, the operations UI).
const stepAbandoned = "cancelled"

// abandonTimersSQL is a statement of finishSQL's WITH list: the timers
// that had not fired when their run closed (fin holds the runs closed by
// the statement) are marked cancelled. Timers written in the same
// statement are not visible to it; abandonPendingTimers marks those. Only
// the runs that recorded a timer (finishSpec.hasTimers) are looked at: the
// others' steps are not read at all.
func (s *store) abandonTimersSQL() string {
	return `abandoned AS (UPDATE ` + s.steps + ` t SET status = '` + stepAbandoned + `', completed_at = fin.closed_at
		FROM fin WHERE fin.closed_at IS NOT NULL AND fin.timers AND t.run_id = fin.run_id AND t.kind = '` + stepTimer + `'
		  AND t.status = '` + stepStarted + `' AND t.fire_at > fin.closed_at)`
}

// abandonPendingTimers marks the run's unwritten timer records that will not
// have fired at now, when the run is about to close.
func (s *runState) abandonPendingTimers(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.pending {
		if st.Kind == stepTimer && st.Status == stepStarted && st.FireAt.Valid && st.FireAt.Time.After(now) {
			st.Status, st.CompletedAt = stepAbandoned, nullTime(now)
		}
	}
}
