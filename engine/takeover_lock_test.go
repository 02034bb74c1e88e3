package engine_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

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
	lockOrderCase(t, "takeover", func(ctx context.Context, e *engine.Engine, owner string, _ []string) error {
		return engine.ExpireLeasesForTest(ctx, e, owner)
	})
}

// A batch release (a worker giving back runs it holds) locks the runs in
// run ID order too: its batch is sorted, but the statement joins it to
// runs in whatever order its plan reads them.
func TestReleaseNeverDeadlocks(t *testing.T) {
	t.Parallel()
	lockOrderCase(t, "release", func(ctx context.Context, e *engine.Engine, owner string, ids []string) error {
		return engine.ReleaseForTest(ctx, e, owner, 1, ids)
	})
}

// lockOrderCase loads runs leased to a worker, holds the lowest run's row
// in a transaction, runs writer (which must wait for it), then takes the
// other rows in run ID order in that transaction: neither may fail with
// "deadlock detected".
func lockOrderCase(t *testing.T, name string, writer func(ctx context.Context, e *engine.Engine, owner string, ids []string) error) {
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow(name+"lock.wf", func(ctx engine.Context, _ int) (string, error) {
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	e := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: time.Minute, UnloadAfter: time.Hour})
	require.NoError(t, e.Register(wf))
	owner := name + "-owner"
	w := lsWorker(t, e, engine.WorkerConfig{ID: owner}, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	const n = 6
	var ids []string
	for i := 0; i < n; i++ {
		run, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: fmt.Sprintf("%slock-%d", name, i)})
		require.NoError(t, err)
		ids = append(ids, run.RunID)
	}
	sort.Strings(ids)
	testenv.Eventually(t, 20*time.Second, func() bool { return engine.LoadedRunsForTest(w) == n }, "runs loaded")
	q := fmt.Sprintf("%q", schema)
	// Each run is marked running a second after its claim; wait for that,
	// so that nothing but this test writes the rows from here on.
	testenv.Eventually(t, 20*time.Second, func() bool {
		var c int
		err := e.DB().QueryRow(`SELECT count(*) FROM `+q+`.runs WHERE status = 'running' AND lease_owner = $1`, owner).Scan(&c)
		return err == nil && c == n
	}, "runs marked running")
	// A new version of the lowest run's row lands after the others in the
	// table, so a scan in table order reaches it last.
	_, err := e.DB().Exec(`UPDATE `+q+`.runs SET updated_at = now() WHERE run_id = $1`, ids[0])
	require.NoError(t, err)

	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`SELECT 1 FROM `+q+`.runs WHERE run_id = $1 FOR NO KEY UPDATE`, ids[0])
	require.NoError(t, err)

	expired := make(chan error, 1)
	go func() { expired <- writer(ctx, e, owner, ids) }()
	testenv.Eventually(t, 20*time.Second, func() bool {
		var waiting int
		err := e.DB().QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE '%`+q+`.runs%' AND query LIKE '%'||$1||'%'`, schema).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the %s never waited on the locked row", name)
	// The writer takes the other rows in run ID order.
	for _, id := range ids[1:] {
		_, err = tx.Exec(`SELECT 1 FROM `+q+`.runs WHERE run_id = $1 FOR NO KEY UPDATE`, id)
		require.NoError(t, err, "the writer locking in run ID order")
	}
	require.NoError(t, tx.Commit())
	require.NoError(t, lsRecv(t, ctx, expired), "the %s", name)
	var left int
	require.NoError(t, e.DB().QueryRow(`SELECT count(*) FROM `+q+`.runs WHERE lease_owner = $1 AND GREATEST(lease_expires_at, claimed_until) > now()`, owner).Scan(&left))
	require.Zero(t, left, "leases left")
}
