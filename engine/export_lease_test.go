package engine

import "context"

// SetRenewHookForTest makes w call f before each background lease renewal,
// so a test can stall renewals (f blocks) and let a lease expire under a
// live worker. Set it before Start.
func SetRenewHookForTest(w *Worker, f func()) { w.renewHook = f }

// SetClaimHookForTest makes w call f before each claim's queries, so a
// test can stall the database while a claim is in flight. Set it before
// Start.
func SetClaimHookForTest(w *Worker, f func()) { w.claimHook = f }

// RenewForTest runs one lease renewal of w's loaded runs now.
func RenewForTest(w *Worker) error { return w.renewOnce() }

// ListenChannelsForTest returns the names of the channels the engine's
// LISTEN connection listens on, so a test can find that connection's
// backend in pg_stat_activity.
func ListenChannelsForTest(e *Engine) []string {
	var out []string
	for _, ch := range e.store.channel {
		out = append(out, ch)
	}
	return out
}

// LoadedRunsForTest returns how many runs w has loaded.
func LoadedRunsForTest(w *Worker) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.runs)
}

// SaveHeartbeatForTest saves heartbeat details of step seq as the claim
// (owner, token) would: token is the run's loads when that claim took it.
func SaveHeartbeatForTest(ctx context.Context, e *Engine, owner string, token int, runID string, seq int, details []byte) error {
	return e.store.saveHeartbeat(ctx, fence{owner: owner, token: token}, runID, seq, details)
}

// ExpireLeasesForTest ends the leases held under owner's name, as a worker
// started with that ID does when it takes over its predecessor's runs.
func ExpireLeasesForTest(ctx context.Context, e *Engine, owner string) error {
	return e.store.expireLeases(ctx, owner)
}

// ReleaseForTest gives back runIDs, held by owner under claim token, as a
// worker releases runs (one statement for the batch).
func ReleaseForTest(ctx context.Context, e *Engine, owner string, token int, runIDs []string) error {
	rs := make([]release, len(runIDs))
	for i, id := range runIDs {
		rs[i] = release{fence: fence{owner: owner, token: token}, runID: id, wakeAt: e.cfg.Clock.Now()}
	}
	return e.store.releaseRuns(ctx, rs)
}

// BumpEventsForTest records an event for each of runIDs in one statement,
// as a commit does for the parents its children's results wake.
func BumpEventsForTest(ctx context.Context, e *Engine, runIDs []string) error {
	return e.store.bumpEvents(ctx, e.db, e.cfg.Clock.Now(), runIDs)
}

// CancelChildrenOfForTest requests cancellation of the children of
// parentRunIDs in one statement, as a commit that closes the parents does,
// and returns the runs it marked.
func CancelChildrenOfForTest(ctx context.Context, e *Engine, parentRunIDs []string) ([]string, error) {
	return e.store.cancelChildrenOf(ctx, e.db, e.cfg.Clock.Now(), parentRunIDs, "parent closed")
}

// SetClientConflictAttemptsForTest makes e's client run a Cancel or Reset
// transaction at most n times when it meets a deadlock or a serialization
// failure (1: no second attempt). Set it before the client's calls.
func SetClientConflictAttemptsForTest(e *Engine, n int) { e.clientConflictAttempts = n }
