package engine_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A worker that takes over its predecessor's runs (same worker ID) locks
// them in run ID order, the order every other writer of several runs locks
// them in (the commit statement, releases), so the take-over never
// deadlocks with such a writer. The writer here is a transaction that holds
// the lowest run's row and then takes the others in order; the take-over
// waits on the lowest row. In a chaos run (workers SIGKILLed and restarted
// under their IDs) the take-over that locked in table order failed with
// "deadlock detected" (40P01) and its runs waited out their leases.
func TestTakeOverNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "takeover", lockOrder{
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			return engine.ExpireLeasesForTest(ctx, e, r.owner)
		},
		check: noLeasesLeft,
	})
}

// A batch release (a worker giving back runs it holds) locks the runs in
// run ID order too: its batch is sorted, but the statement joins it to
// runs in whatever order its plan reads them.
func TestReleaseNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "release", lockOrder{
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			return engine.ReleaseForTest(ctx, e, r.owner, 1, r.ids)
		},
		check: noLeasesLeft,
	})
}

// A commit whose children's results wake their parents records an event
// for each parent in one statement (bumpEvents), which locks them in run
// ID order.
func TestBumpEventsNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "bump", lockOrder{
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			return engine.BumpEventsForTest(ctx, e, r.ids)
		},
		check: func(t *testing.T, e *engine.Engine, r lockRuns) {
			require.Equal(t, len(r.ids), countRuns(t, e, r, `run_id = ANY($1) AND event_seq > 0`, pq.Array(r.ids)), "runs with the event recorded")
		},
	})
}

// A commit that closes a parent requests cancellation of its children in
// one statement (cancelChildrenOf), which locks them in run ID order.
func TestCancelChildrenNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "cancelchildren", lockOrder{
		children: true,
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			ids, err := engine.CancelChildrenOfForTest(ctx, e, []string{r.parentRun})
			if err == nil && len(ids) != len(r.ids) {
				err = fmt.Errorf("%d of %d children marked cancelled", len(ids), len(r.ids))
			}
			return err
		},
	})
}

// A client's cancel marks the run and its children in one statement,
// which locks the tree in run ID order.
func TestCancelTreeNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "canceltree", cancelTreeCase(false))
}

// cancelTreeCase is a client's cancel of the parent of the case's runs.
func cancelTreeCase(crossed bool) lockOrder {
	return lockOrder{
		children: true,
		crossed:  crossed,
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			return e.Client().Cancel(ctx, r.parent, "test")
		},
		check: func(t *testing.T, e *engine.Engine, r lockRuns) {
			require.Equal(t, len(r.ids)+1, countRuns(t, e, r, `cancel_requested_at IS NOT NULL`), "runs marked cancelled")
		},
	}
}

// ResetManyTx finds the latest runs by workflow ID and locks them in run
// ID order, not in the order of their workflow IDs.
func TestResetManyNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "resetmany", lockOrder{
		reversed: true,
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			return inTx(ctx, e, func(tx *sql.Tx) ([]error, error) {
				res, err := e.Client().ResetManyTx(ctx, tx, r.workflowIDs, engine.ResetOptions{BeforeSeq: 1})
				errs := make([]error, len(res))
				for i, x := range res {
					errs[i] = x.Err
				}
				return errs, err
			})
		},
		check: func(t *testing.T, e *engine.Engine, r lockRuns) {
			require.Equal(t, len(r.ids), countRuns(t, e, r, `run_id = ANY($1) AND status = 'reset'`, pq.Array(r.ids)), "runs reset")
		},
	})
}

// A reset hands the open children of the run it replaces to the new run
// in one statement, which locks them in run ID order.
func TestResetChildrenNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "resetchildren", resetChildrenCase(false))
}

// resetChildrenCase is a client's reset of the parent of the case's runs.
func resetChildrenCase(crossed bool) lockOrder {
	return lockOrder{
		children: true,
		crossed:  crossed,
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			_, err := e.Client().Reset(ctx, r.parent, engine.ResetOptions{BeforeSeq: 1})
			return err
		},
		check: func(t *testing.T, e *engine.Engine, r lockRuns) {
			require.Equal(t, len(r.ids), countRuns(t, e, r, `run_id = ANY($1) AND parent_run_id <> $2`, pq.Array(r.ids), r.parentRun),
				"children handed to the new run")
		},
	}
}

// A start of workflows whose earlier runs are closed marks those runs
// superseded in its statement, which locks them in run ID order, not in
// the order of their workflow IDs.
func TestSupersedeNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "supersede", lockOrder{
		reversed: true,
		closed:   true,
		writer: func(ctx context.Context, e *engine.Engine, r lockRuns) error {
			starts := make([]engine.StartManyParams, len(r.workflowIDs))
			for i, id := range r.workflowIDs {
				starts[i] = engine.StartManyParams{Workflow: "supersedelock.wf", Input: json.RawMessage("0"), Options: &engine.StartOptions{ID: id}}
			}
			return inTx(ctx, e, func(tx *sql.Tx) ([]error, error) {
				res, err := e.Client().StartManyTx(ctx, tx, starts)
				errs := make([]error, len(res))
				for i, x := range res {
					errs[i] = x.Err
				}
				return errs, err
			})
		},
		check: func(t *testing.T, e *engine.Engine, r lockRuns) {
			require.Equal(t, len(r.ids), countRuns(t, e, r, `run_id = ANY($1) AND superseded`, pq.Array(r.ids)), "runs superseded")
		},
	})
}

// A client's cancel of a run tree locks the parent before its children
// (run ID order); a transaction that holds a child and then takes the
// parent locks them the other way round, as every commit that closed a
// child and woke its parent did before it locked them in one statement
// (see TestCancelAgreesWithAChildsCommit). When the two deadlock and
// PostgreSQL cancels the cancel, the client runs it again instead of
// failing the call.
func TestCancelRetriesADeadlock(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "cancelretry", cancelTreeCase(true))
}

// A client's reset of a parent locks it before the children it hands to
// the new run (run ID order): like a cancel, it runs again when it
// deadlocks with a transaction that holds a child and then takes the
// parent.
func TestResetRetriesADeadlock(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "resetretry", resetChildrenCase(true))
}

// lockOrder is one case of lockOrderCase: the runs it loads and the
// statement under test.
type lockOrder struct {
	// children: the runs are the children of one parent run (cancelled
	// when it closes), which is loaded too; otherwise they are top-level.
	children bool
	// reversed: the runs' workflow IDs sort in the reverse order of their
	// run IDs, so that a statement locking in workflow ID order does not
	// lock in run ID order by chance.
	reversed bool
	// closed: the runs are completed (by their "go" signal) before the
	// writer runs.
	closed bool
	// crossed: the test's transaction, holding the lowest child, then
	// takes the parent, as a commit that closed a child and then woke its
	// parent did; it waits longer than the writer before it looks for a
	// deadlock, so that the writer, which locks the parent first, is the
	// one PostgreSQL cancels (40P01) and must run again.
	crossed bool
	// writer runs the statement under test; it must wait for the lowest
	// run, which the test holds.
	writer func(ctx context.Context, e *engine.Engine, r lockRuns) error
	// check, if set, looks at what the writer did once it returned.
	check func(t *testing.T, e *engine.Engine, r lockRuns)
}

// lockRuns are the runs of a lockOrderCase.
type lockRuns struct {
	owner  string // the worker that holds them
	schema string // quoted
	// ids are the run IDs the writer locks (the parent's children in a
	// children case), in run ID order; workflowIDs are their workflow IDs,
	// in the same order.
	ids, workflowIDs []string
	// parent is the parent's workflow ID and parentRun its run ID, in a
	// children case.
	parent, parentRun string
}

// lockOrderCase loads runs leased to a worker, holds the lowest run's row
// in a transaction, runs c.writer (which must wait for it), then takes the
// other rows in run ID order in that transaction: neither may fail with
// "deadlock detected".
func lockOrderCase(t *testing.T, name string, c lockOrder) {
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow(name+"lock.wf", func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	const n = 6
	parent := engine.NewWorkflow(name+"lock.parent", func(ctx engine.Context, _ int) (string, error) {
		for i := 0; i < n; i++ {
			wf.StartChild(ctx, 0, &engine.ChildOptions{ID: lockWorkflowID(name+"-child", i, n, c.reversed)})
		}
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	cfg := &engine.Config{Schema: schema, LeaseTTL: time.Minute, UnloadAfter: time.Hour}
	if c.crossed {
		// PostgreSQL looks for a deadlock once, deadlock_timeout after a
		// wait begins. The writer's wait begins before the test's
		// transaction closes the cycle; with the default 1s, a test slowed
		// past it (a loaded machine) had its writer look too early and
		// find none, and the test's own transaction was cancelled 30s
		// later instead (seen by delaying the test's statement 2s). So the
		// writer looks after 10s.
		deadlockCheckAfter(t, cfg, "10s")
	}
	e := testenv.Engine(t, cfg)
	require.NoError(t, e.Register(wf))
	require.NoError(t, e.Register(parent))
	r := lockRuns{owner: name + "-owner", schema: fmt.Sprintf("%q", schema)}
	q := r.schema
	w := lsWorker(t, e, engine.WorkerConfig{ID: r.owner}, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	total := n
	if c.children {
		total++
		r.parent = name + "-parent"
		run, err := parent.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: r.parent})
		require.NoError(t, err)
		r.parentRun = run.RunID
	} else {
		for i := 0; i < n; i++ {
			_, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: lockWorkflowID(name, i, n, c.reversed)})
			require.NoError(t, err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == total }, "runs loaded")
	// Each run is marked running a second after its claim; wait for that,
	// so that nothing but this test writes the rows from here on.
	testenv.Eventually(t, 20*time.Second, func() bool {
		return countRuns(t, e, r, `status = 'running' AND lease_owner = $1`, r.owner) == total
	}, "runs marked running")
	if c.closed {
		for i := 0; i < n; i++ {
			require.NoError(t, e.Client().Signal(ctx, lockWorkflowID(name, i, n, c.reversed), "go", "done"))
		}
		testenv.Eventually(t, 20*time.Second, func() bool {
			return countRuns(t, e, r, `status = 'completed'`) == n && engine.LoadedRunsForTest(w) == 0
		}, "runs completed")
	}
	rows, err := e.DB().Query(`SELECT run_id, workflow_id FROM `+q+`.runs WHERE run_id <> $1 ORDER BY run_id`, r.parentRun)
	require.NoError(t, err)
	for rows.Next() {
		var id, wid string
		require.NoError(t, rows.Scan(&id, &wid))
		r.ids, r.workflowIDs = append(r.ids, id), append(r.workflowIDs, wid)
	}
	require.NoError(t, rows.Err())
	require.Len(t, r.ids, n)
	if c.reversed {
		require.True(t, sort.IsSorted(sort.Reverse(sort.StringSlice(r.workflowIDs))), "workflow IDs in reverse run ID order: %v", r.workflowIDs)
	}
	// A new version of the lowest run's row is written until it lies after
	// the others in the table (an update fills a line pointer a page prune
	// freed before it appends one), so a scan in table order reaches it
	// last. It changes an indexed column (the lease's expiry, or a closed
	// run's close time: not a heap-only update), so its
	// index entries are new too, after the others of the same key, and an
	// index scan of runs' indexes also reaches it last.
	for last := false; !last; {
		require.NoError(t, e.DB().QueryRow(`WITH u AS (UPDATE `+q+`.runs SET lease_expires_at = lease_expires_at + interval '1 millisecond',
				closed_at = closed_at + interval '1 microsecond'
			WHERE run_id = $1 RETURNING ctid)
			SELECT u.ctid > ALL (SELECT ctid FROM `+q+`.runs WHERE run_id <> $1) FROM u`, r.ids[0]).Scan(&last))
	}

	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	if c.crossed {
		_, err = tx.Exec(`SET LOCAL deadlock_timeout = '30s'`)
		require.NoError(t, err)
	}
	_, err = tx.Exec(`SELECT 1 FROM `+q+`.runs WHERE run_id = $1 FOR NO KEY UPDATE`, r.ids[0])
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- c.writer(ctx, e, r) }()
	testenv.Eventually(t, 20*time.Second, func() bool {
		var waiting int
		err := e.DB().QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE '%`+q+`.runs%' AND query LIKE '%'||$1||'%'`, schema).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the %s never waited on the locked row", name)
	// The test's writer takes the other rows in run ID order, or the
	// parent.
	then := r.ids[1:]
	if c.crossed {
		then = []string{r.parentRun}
	}
	for _, id := range then {
		_, err = tx.Exec(`SELECT 1 FROM `+q+`.runs WHERE run_id = $1 FOR NO KEY UPDATE`, id)
		require.NoError(t, err, "the test's writer")
	}
	require.NoError(t, tx.Commit())
	require.NoError(t, lsRecv(t, ctx, done), "the %s", name)
	if c.check != nil {
		c.check(t, e, r)
	}
}

// lockWorkflowID is the workflow ID of the i-th of n runs started: in
// start order (run ID order), or in the reverse order.
func lockWorkflowID(name string, i, n int, reversed bool) string {
	if reversed {
		i = n - 1 - i
	}
	return fmt.Sprintf("%slock-%d", name, i)
}

// noLeasesLeft checks that the writer ended the owner's leases of the
// runs' first load (loads = 1). The worker, still running, may have
// claimed a run again since: that is another lease (loads 2).
func noLeasesLeft(t *testing.T, e *engine.Engine, r lockRuns) {
	require.Zero(t, countRuns(t, e, r, `lease_owner = $1 AND loads = 1 AND GREATEST(lease_expires_at, claimed_until) > now()`, r.owner), "leases left")
}

// inTx runs f, a call of many workflows, in a transaction and commits it
// if neither the call nor any of its workflows failed.
func inTx(ctx context.Context, e *engine.Engine, f func(tx *sql.Tx) ([]error, error)) error {
	tx, err := e.DB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	errs, err := f(tx)
	if err = errors.Join(append(errs, err)...); err != nil {
		return err
	}
	return tx.Commit()
}

// countRuns counts the runs of r's schema for which cond holds.
func countRuns(t *testing.T, e *engine.Engine, r lockRuns, cond string, args ...any) int {
	var n int
	require.NoError(t, e.DB().QueryRow(`SELECT count(*) FROM `+r.schema+`.runs WHERE `+cond, args...).Scan(&n))
	return n
}

// deadlockCheckAfter gives cfg a pool whose sessions look for a deadlock
// d after a wait begins (deadlock_timeout, "10s"), not 1s. Of two
// transactions that close a cycle, PostgreSQL cancels (40P01) the one
// that looks first: with 10s, the one that waited first, even on a loaded
// machine.
func deadlockCheckAfter(t *testing.T, cfg *engine.Config, d string) {
	u, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	q := u.Query()
	q.Set("options", "-c deadlock_timeout="+d)
	u.RawQuery = q.Encode()
	db, err := engine.OpenDB(u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cfg.DB, cfg.DatabaseURL = db, u.String()
}
