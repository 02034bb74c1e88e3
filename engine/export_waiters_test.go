package engine

import "time"

// WaiterCountForTest returns how many result waiters the engine holds, so
// external tests can check that waiting costs no memory once it is over.
func WaiterCountForTest(e *Engine) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ws := range e.waiters {
		n += len(ws)
	}
	return n
}

// SetBlockedHookForTest makes fn run on each pass of a blocked run that
// finds nothing ready, once the run has decided whether to unload and
// before an unload is written. A test sees the unload rules' decisions
// without timing them, and an event sent from fn races with the unload
// every time rather than by luck.
func SetBlockedHookForTest(e *Engine, fn func(runID string, unloading bool)) {
	e.hooks.blocked.Store(&fn)
}

// SetLostCommitAckForTest makes the committer ask fn after each commit
// whether to report it as a lost connection instead, as if the
// acknowledgement of COMMIT never arrived.
func SetLostCommitAckForTest(e *Engine, fn func() bool) {
	e.commit.lostAck.Store(&fn)
}

// SetBeforeCommitForTest makes fn run before each attempt to write a batch,
// once its ops are taken for writing.
func SetBeforeCommitForTest(e *Engine, fn func()) {
	e.commit.beforeExec.Store(&fn)
}

// SetQueuedForTest makes fn run each time a write whose submitter waits for
// it (a start, for instance) has been queued.
func SetQueuedForTest(e *Engine, fn func()) {
	e.commit.queued.Store(&fn)
}

// SetResultPollForTest sets how often a Result call waiting on another
// process's run reads the run again without being woken: the safety net
// behind a lost close notification. A test sets it to an hour to prove that
// the notification, not the poll, wakes the waiter.
func SetResultPollForTest(e *Engine, d time.Duration) { e.resultPoll.Store(int64(d)) }

// SetPurgeIntervalForTest makes the retention loop of the engine cfg
// configures run every d. Set it before New.
func SetPurgeIntervalForTest(cfg *Config, d time.Duration) { cfg.purgeEvery = d }

// SetPurgeHookForTest makes fn learn of each round of e's retention loop
// with the runs it removed, so a test counts rounds rather than time.
func SetPurgeHookForTest(e *Engine, fn func(n int, err error)) { e.hooks.purged.Store(&fn) }

// SetSignalLoadHookForTest makes fn learn how many signals each read of a
// run's buffered signals returned.
func SetSignalLoadHookForTest(e *Engine, fn func(n int)) { e.store.signalsLoaded.Store(&fn) }

// OutcomeReadsForTest returns how many runs the engine's Result calls have
// read from the database (their outcome reads), so a test can tell an
// outcome taken from a notice from one read back.
func OutcomeReadsForTest(e *Engine) int64 { return e.outcomes.runsRead.Load() }

// SetCloseNoticeHookForTest makes fn learn of each run the engine's
// committer closes and whether the close is announced to other processes.
func SetCloseNoticeHookForTest(e *Engine, fn func(runID string, announced bool)) {
	e.notes.closed.Store(&fn)
}

// SetMissListenersForTest makes the engine's commits report no process
// waiting on closes elsewhere, as a commit whose statement took its
// snapshot before a waiter registered does; window replaces how long after
// its registration a waiter reads its run again for such closes.
func SetMissListenersForTest(runner, waiter *Engine, window time.Duration) {
	runner.commit.missListeners.Store(true)
	waiter.listeners.window = window
}

// QueuedWriteForTest is a write queued in a commit shard: its run, the
// statuses of its step records, and the status its transition puts the
// run in ("" for none).
type QueuedWriteForTest struct {
	RunID string
	Steps []string
	Fin   Status
}

// QueuedWritesForTest returns the writes queued in e's commit shards, not
// yet taken for writing.
func QueuedWritesForTest(e *Engine) []QueuedWriteForTest {
	var out []QueuedWriteForTest
	for _, sh := range e.commit.shards {
		sh.mu.Lock()
		for _, op := range sh.queue {
			q := QueuedWriteForTest{RunID: op.runID}
			for _, st := range op.steps {
				q.Steps = append(q.Steps, st.Status)
			}
			if op.fin != nil {
				q.Fin = op.fin.status
			}
			out = append(out, q)
		}
		sh.mu.Unlock()
	}
	return out
}

// IdleRunnersForTest returns how many goroutines of w wait for a next run.
func IdleRunnersForTest(w *Worker) int { return int(w.idleRunners.Load()) }

// SetResultReadHookForTest makes fn learn of each read of its run a Result
// call waiting on the database makes, and why it makes it.
func SetResultReadHookForTest(e *Engine, fn func(runID, why string)) { e.hooks.resultRead.Store(&fn) }

// SetQuietWindowForTest replaces how long after its registration a Result
// call waiting on the database reads its run again for closes that did not
// see the registration (quietWindow). Set it before the first Result call.
func SetQuietWindowForTest(e *Engine, d time.Duration) { e.listeners.window = d }
