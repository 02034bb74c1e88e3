package engine_test

import (
	"os"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Workers whose LeaseTTL differs share one database: a worker process
// leasing for 20 s holds three runs, each blocked in its second activity,
// and a worker in this process leasing for 1 s (its looks for expired
// leases every quarter of a second, their windows and the ages of the
// leases they move all reckoned in its own period) starts beside it. While
// the long lease is renewed, the short-lease worker takes none of its runs
// (over more than two of the holder's renewals, ten and more of its own
// lease periods, its first look reading every expired lease). Once the
// long-lease process is killed (SIGKILL), the short-lease worker takes the
// runs after the holder's lease ran out, not before, and each completes
// once: the completed first activity is not run again, the second (lost
// in flight) runs again here, the third once. The roster counts both
// workers while both live, and one once the killed one's row expired.
func TestShortLeaseWorkerWaitsForALongLeaseToExpire(t *testing.T) {
	t.Parallel()
	const long, short = 20 * time.Second, time.Second
	e := testenv.Engine(t, &engine.Config{LeaseTTL: short, PollInterval: 100 * time.Millisecond})
	schema, db, c := e.Schema(), e.DB(), e.Client()
	rbTables(t, db, schema)
	require.NoError(t, e.Register(rbProcessDefs(db, schema)...))
	child := rbSpawn(t, schema, long, 2*time.Second)
	child.WaitLine(t, rbHelperReady, rbReadyWithin)
	ctx := testenv.Ctx(t, 3*time.Minute)

	// No worker runs in this process yet: the child claims the runs.
	ids := rbIDs("mix", 3)
	runs := make([]*engine.RunHandle, len(ids))
	for i, id := range ids {
		h, err := c.StartByName(ctx, "proc.crash", []byte(`"`+id+`"`), &engine.StartOptions{ID: id})
		require.NoError(t, err)
		runs[i] = h
	}
	for _, id := range ids {
		testenv.Eventually(t, 60*time.Second, func() bool {
			n := rbExecCounts(t, db, schema, id)
			return n["one"] == 1 && n["two"] == 1
		}, "step two of %s never started in the child", id)
	}
	type lease struct {
		Status  string    `db:"status"`
		Owner   string    `db:"lease_owner"`
		Expires time.Time `db:"lease_expires_at"`
		Loads   int       `db:"loads"`
	}
	leases := func() map[string]lease {
		var rows []struct {
			ID string `db:"workflow_id"`
			lease
		}
		require.NoError(t, db.SelectContext(ctx, &rows, `SELECT workflow_id, status,
			COALESCE(lease_owner, '') AS lease_owner, COALESCE(lease_expires_at, 'epoch') AS lease_expires_at, loads
			FROM `+pq.QuoteIdentifier(schema)+`.runs WHERE workflow_id = ANY($1)`, pq.Array(ids)))
		out := map[string]lease{}
		for _, r := range rows {
			out[r.ID] = r.lease
		}
		return out
	}
	// Marked running (its lease in lease_expires_at) by the child's
	// promotion pass, a second or so after its claim.
	var first map[string]lease
	testenv.Eventually(t, 30*time.Second, func() bool {
		first = leases()
		for _, id := range ids {
			if first[id].Status != "running" {
				return false
			}
		}
		return true
	}, "the child never marked its runs running")
	holder := first[ids[0]].Owner
	for _, id := range ids {
		require.Equal(t, holder, first[id].Owner, "every run is the child's")
		require.Equal(t, 1, first[id].Loads)
	}

	w := testenv.Worker(t, e, engine.WorkerConfig{})
	require.NotEqual(t, holder, w.ID())
	testenv.Eventually(t, 30*time.Second, func() bool { return engine.LiveWorkersForTest(e) == 2 },
		"the roster never counted both workers (counts %d)", engine.LiveWorkersForTest(e))
	// Past two of the holder's renewals (each moves its lease 20 s past
	// its own time; they come every third of it).
	testenv.Eventually(t, 60*time.Second, func() bool {
		now := leases()
		for _, id := range ids {
			l := now[id]
			require.Equal(t, "running", l.Status, "run %s", id)
			require.Equal(t, holder, l.Owner, "the short-lease worker took run %s from a live lease", id)
			require.Equal(t, 1, l.Loads, "run %s was loaded again", id)
			if !l.Expires.After(first[id].Expires.Add(2 * long / 3)) {
				return false
			}
		}
		return true
	}, "the child never renewed its leases")
	for _, id := range ids {
		require.Equal(t, map[string]int{"one": 1, "two": 1}, rbExecCounts(t, db, schema, id), "run %s", id)
	}

	child.Kill(t)
	// The holder's lease as it stands once it is dead: a renewal that was
	// in flight at the kill can only have moved it later.
	dead := leases()
	for _, id := range ids {
		rbRelease(t, db, schema, id)
	}
	for i, id := range ids {
		out, err := runs[i].Result(ctx)
		require.NoError(t, err)
		require.JSONEq(t, `"`+id+`:one-done,two-done,three-done"`, string(out))
		require.Equal(t, map[string]int{"one": 1, "two": 2, "three": 1}, rbExecCounts(t, db, schema, id),
			"run %s: the completed step not run again, the lost one again, the last once", id)
		info, err := c.Describe(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 2, info.Loads, "run %s: loaded by the child, then once here", id)
		// The second attempt of step two ran here, after the lease it
		// was taken from had expired.
		var pid int
		var at time.Time
		require.NoError(t, db.QueryRowContext(ctx, `SELECT pid, at FROM `+pq.QuoteIdentifier(schema)+`.executions
			WHERE workflow_id = $1 AND step = 'two' ORDER BY id DESC LIMIT 1`, id).Scan(&pid, &at))
		require.Equal(t, os.Getpid(), pid, "run %s resumed elsewhere", id)
		require.True(t, at.After(dead[id].Expires), "run %s resumed at %v, within the holder's lease (until %v)",
			id, at, dead[id].Expires)
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return engine.LiveWorkersForTest(e) == 1 },
		"the roster kept counting the killed worker (counts %d)", engine.LiveWorkersForTest(e))
}
