package engine

import "time"

// SetWorkNoticeHookForTest makes fn learn of each work notice the client's
// process sends: its queue and the worker it names ("" for every worker).
func SetWorkNoticeHookForTest(c *Client, fn func(queue, worker string)) {
	c.e.notes.named.Store(&fn)
}

// PinnedRunsForTest returns how many loaded runs each commit shard of the
// engine serves.
func PinnedRunsForTest(e *Engine) []int64 {
	out := make([]int64, len(e.commit.shards))
	for i, sh := range e.commit.shards {
		out[i] = sh.runs.Load()
	}
	return out
}

// SetDoneNoticeHookForTest makes fn learn of each done notification the
// engine's listener reads.
func SetDoneNoticeHookForTest(e *Engine, fn func()) {
	e.hooks.doneNotice.Store(&fn)
}

// SetNoticeHookForTest makes fn learn of each notification the engine's
// listener reads: its channel and payload.
func SetNoticeHookForTest(e *Engine, fn func(channel, payload string)) {
	e.hooks.notice.Store(&fn)
}

// ClientEngineForTest returns the engine a NewClient client runs on.
func ClientEngineForTest(c *Client) *Engine { return c.e }

// RosterTimesForTest returns how long a worker's roster row lives
// unrenewed, how often a worker renews it, and how old a process's copy
// of the roster may grow.
func RosterTimesForTest() (ttl, beat, read time.Duration) { return rosterTTL, rosterBeat, rosterRead }

// LiveWorkersForTest returns how many live workers the engine's workers
// last read in the roster.
func LiveWorkersForTest(e *Engine) int64 { return e.liveWorkers.Load() }

// SetListenCheckForTest makes the engine cfg configures check its LISTEN
// connection every interval without a notification. Set it before New.
func SetListenCheckForTest(cfg *Config, interval time.Duration) { cfg.listenCheckEvery = interval }

// SetListenCheckHookForTest makes fn learn of e's checks of its LISTEN
// connection: "tick" at each interval, "start" and "end" around each
// check.
func SetListenCheckHookForTest(e *Engine, fn func(event string)) { e.hooks.listenCheck.Store(&fn) }
