package grafttest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
)

// Replay re-executes each recorded run with today's workflow code (defs)
// and fails the test with one line per run that no longer replays, naming
// the step, what the record holds and what the code asked for. Run it
// before a deploy against records of runs still open in production (see
// ReplayFile, ReplayDatabase): a run that does not replay here would fail
// with a non-determinism error once a worker with the new code resumes it.
func Replay(t testing.TB, runs []*engine.RecordedRun, defs ...engine.Definition) {
	t.Helper()
	r, err := engine.NewReplayer(defs...)
	if err != nil {
		t.Fatalf("grafttest: %v", err)
	}
	failed := 0
	for _, run := range runs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := r.Replay(ctx, run)
		cancel()
		if err != nil {
			failed++
			t.Errorf("grafttest: %v", err)
		}
	}
	if failed > 0 {
		t.Fatalf("grafttest: %d of %d recorded runs do not replay with today's code", failed, len(runs))
	}
}

// ReplayFile replays the runs of a file written by ExportRecords (or by
// engine.WriteRecords).
func ReplayFile(t testing.TB, path string, defs ...engine.Definition) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("grafttest: %v", err)
	}
	runs, err := engine.ReadRecords(b)
	if err != nil {
		t.Fatalf("grafttest: %s: %v", path, err)
	}
	Replay(t, runs, defs...)
}

// ReplayDatabase replays the runs of a graft schema that f selects (by
// default the newest engine.DefaultListLimit): the database is read, never
// written. c may come from engine.NewClient on a copy of production.
func ReplayDatabase(t testing.TB, c *engine.Client, f engine.ListFilter, defs ...engine.Definition) {
	t.Helper()
	Replay(t, Records(t, c, f), defs...)
}

// Records reads the records of the runs f selects.
func Records(t testing.TB, c *engine.Client, f engine.ListFilter) []*engine.RecordedRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runs, err := c.Records(ctx, f)
	if err != nil {
		t.Fatalf("grafttest: read records: %v", err)
	}
	return runs
}

// ExportRecords writes the records of the runs f selects to path, for
// ReplayFile in later tests (keep such files under testdata/).
func ExportRecords(t testing.TB, c *engine.Client, f engine.ListFilter, path string) {
	t.Helper()
	b, err := engine.WriteRecords(Records(t, c, f))
	if err != nil {
		t.Fatalf("grafttest: %v", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("grafttest: %v", err)
	}
}
