package grafttest

import (
	"context"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
)

// DefaultWait bounds WaitStatus and Eventually when no deadline is given:
// generous, as tests run on loaded machines and under -race.
const DefaultWait = 30 * time.Second

// Describer is a run to wait on: *engine.RunHandle, or *engine.Run[T].
type Describer interface {
	Describe(ctx context.Context) (*engine.RunInfo, error)
}

// WaitStatus polls the run until it has status want and returns its
// description. It fails the test when the deadline (DefaultWait, or within
// when given) passes, or at once when the run closes with another status
// (a closed run does not change again), with the run's error.
func WaitStatus(t testing.TB, run Describer, want engine.Status, within ...time.Duration) *engine.RunInfo {
	t.Helper()
	deadline := time.Now().Add(waitFor(within))
	var last *engine.RunInfo
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := run.Describe(ctx)
		cancel()
		if err == nil {
			last = info
			if info.Status == want {
				return info
			}
			if !info.Status.IsOpen() {
				t.Fatalf("grafttest: run %s (workflow %s) closed as %s, not %s; its error: %v",
					info.RunID, info.WorkflowID, info.Status, want, info.Error)
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("grafttest: run %s (workflow %s) is %s, not %s, after %v", last.RunID, last.WorkflowID, last.Status, want, waitFor(within))
			}
			t.Fatalf("grafttest: run not described within %v: %v", waitFor(within), lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eventually polls cond every 20 ms until it holds, and fails the test with
// msg when the deadline (DefaultWait, or within when given) passes first.
func Eventually(t testing.TB, cond func() bool, msg string, within ...time.Duration) {
	t.Helper()
	d := waitFor(within)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("grafttest: not within %v: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFor(within []time.Duration) time.Duration {
	if len(within) > 0 && within[0] > 0 {
		return within[0]
	}
	return DefaultWait
}
