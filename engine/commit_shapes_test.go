package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// The commit statement has only the parts its batch needs (steps, run
// transitions, abandoned timers, run inserts, their first steps). Each
// shape still fences the writes of an existing run by its lease owner and
// claim number, closes only the runs it holds, marks their unfired timers
// cancelled, and inserts the runs it starts with their first steps, with
// its rows as a VALUES list (a batch of a few ops) and as arrays.
func TestCommitShapesFenceAndWrite(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	ctx := testenv.Ctx(t, 2*time.Minute)
	exec, db, s := hotPlanExec(ctx, t, e), e.DB(), `"`+e.Schema()+`"`
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		require.NoError(t, db.QueryRowContext(ctx, strings.ReplaceAll(q, "{s}", s), args...).Scan(&n))
		return n
	}
	for _, shape := range engine.CommitShapesForTest() {
		t.Run(shape, func(t *testing.T) {
			parts := map[string]bool{}
			for _, p := range strings.Split(strings.TrimSuffix(shape, "/arrays"), "+") {
				parts[p] = true
			}
			run, fenced := "run-"+shape, parts["steps"] || parts["fin"]
			// A run leased to "worker" under its second claim, with a
			// timer that has not fired.
			exec(`INSERT INTO {s}.runs (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads)
				VALUES ($1, $1, 'shape', 'shape', 'running', 'worker', now() + interval '1 hour', 2)`, run)
			exec(`INSERT INTO {s}.steps (run_id, seq, kind, name, status, started_at, fire_at)
				VALUES ($1, 2, 'timer', 'timer', 'started', now(), now() + interval '1 hour')`, run)
			wrote := func() (steps, closed, cancelled int) {
				return count(`SELECT count(*) FROM {s}.steps WHERE run_id = $1 AND seq = 1`, run),
					count(`SELECT count(*) FROM {s}.runs WHERE run_id = $1 AND status = 'completed'`, run),
					count(`SELECT count(*) FROM {s}.steps WHERE run_id = $1 AND seq = 2 AND status = 'cancelled'`, run)
			}
			for i, f := range []struct {
				owner string
				token int
			}{{"other", 2}, {"worker", 1}} {
				newID := "new-" + shape + "-" + string(rune('a'+i))
				old, started, err := engine.CommitShapeForTest(ctx, e, shape, run, newID, f.owner, f.token)
				require.NoError(t, err)
				if fenced {
					require.Error(t, old, "a write under a stale fence %v", f)
				}
				if parts["news"] {
					require.NoError(t, started, "a start is fenced by its own insert")
				}
				steps, closed, cancelled := wrote()
				require.Zero(t, steps+closed+cancelled, "nothing written under a stale fence %v", f)
			}
			old, started, err := engine.CommitShapeForTest(ctx, e, shape, run, "new-"+shape, "worker", 2)
			require.NoError(t, err)
			require.NoError(t, old)
			require.NoError(t, started)
			steps, closed, cancelled := wrote()
			require.Equal(t, b2i(parts["steps"]), steps, "step written")
			require.Equal(t, b2i(parts["fin"]), closed, "run closed")
			require.Equal(t, b2i(parts["timers"]), cancelled, "unfired timer cancelled")
			if parts["news"] {
				require.Equal(t, 1, count(`SELECT count(*) FROM {s}.runs WHERE run_id = $1 AND status = 'running' AND lease_owner = 'worker'`, "new-"+shape))
				require.Equal(t, b2i(parts["new_steps"]), count(`SELECT count(*) FROM {s}.steps WHERE run_id = $1`, "new-"+shape))
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
