package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// slClaimEnv returns an engine on a schema of its own with a workflow
// named typ registered (the claims' tests write its runs' rows directly),
// and the quoted name of its runs table.
func slClaimEnv(t *testing.T, typ string) (*engine.Engine, string) {
	t.Helper()
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(engine.NewWorkflow(typ, func(ctx engine.Context, _ int) (int, error) { return 0, nil })))
	return e, pq.QuoteIdentifier(e.Schema()) + ".runs"
}

// A run started eagerly that waits before anything else (a sleep first) is
// inserted waiting, in the transaction that writes its timer: one write,
// not an insert and then its unload. It then wakes and ends as any other,
// and a second start of its ID is refused as before.
func TestSleepFirstStartWritesOnce(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	wf := engine.NewWorkflow("sleepers.first", func(ctx engine.Context, n int) (int, error) {
		if err := engine.Sleep(ctx, time.Hour); err != nil {
			return 0, err
		}
		return n + 1, nil
	})
	e, c := ftEnv(t, &engine.Config{Clock: clock}, wf)
	// The insert waits for the unload, however slow the machine.
	engine.SetEagerGraceForTest(e, time.Minute)
	ctx := testenv.Ctx(t, 30*time.Second)

	run, err := wf.Start(ctx, c, 41, &engine.StartOptions{ID: "sleeper"})
	require.NoError(t, err)
	info := ftWaitUnloaded(t, c, "sleeper", 1)
	require.Equal(t, 1, info.Loads)

	var sameTx, leased bool
	var wakeAt time.Time
	require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT r.xmin::text = s.xmin::text, r.lease_expires_at IS NOT NULL, r.wake_at
		FROM `+pq.QuoteIdentifier(e.Schema())+`.runs r JOIN `+pq.QuoteIdentifier(e.Schema())+`.steps s ON s.run_id = r.run_id
		WHERE r.run_id = $1 AND s.kind = 'timer'`, run.RunID).Scan(&sameTx, &leased, &wakeAt))
	require.True(t, sameTx, "the run's row was written again after its insert")
	require.False(t, leased, "a waiting run holds no lease")
	require.True(t, wakeAt.Equal(ftT0.Add(time.Hour)), "wake_at %v", wakeAt)

	_, err = wf.Start(ctx, c, 1, &engine.StartOptions{ID: "sleeper"})
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)

	clock.Advance(time.Hour)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, out)
	require.Equal(t, 2, ftDescribe(t, c, "sleeper").Loads)
}

// The queries that find work read their index in order, whatever the
// number of due runs: the claim of due runs (one queue and several) and
// nextWake the (queue, wake_at) index, the claim of expired leases the
// lease index; none reads the whole table or sorts every due run.
func TestClaimPlansUseIndexes(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "plans.wf")
	ctx := testenv.Ctx(t, 60*time.Second)
	// 40,000 due runs in two queues, 2,000 running with expired leases.
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, wake_at, lease_owner, lease_expires_at, loads)
		SELECT 'r' || i, 'w' || i, 'plans.wf', CASE WHEN i % 2 = 0 THEN 'q1' ELSE 'q2' END,
			CASE WHEN i % 21 = 0 THEN 'running' ELSE 'waiting' END, now() - i * interval '1 ms',
			CASE WHEN i % 21 = 0 THEN 'gone' END, CASE WHEN i % 21 = 0 THEN now() - interval '1 minute' END, 1
		FROM generate_series(1, 42000) i`)
	require.NoError(t, err)
	_, err = e.DB().ExecContext(ctx, `ANALYZE `+runs)
	require.NoError(t, err)

	plans, err := engine.ClaimPlansForTest(ctx, e, []string{"q1", "q2"}, []string{"plans.wf"})
	require.NoError(t, err)
	for name, index := range map[string]string{
		"claim": "runs_claimable", "claim-queues": "runs_claimable", "claim-expired": "runs_leased", "claim-expired-within": "runs_leased",
		"next-wake": "runs_claimable", "next-wake-queues": "runs_claimable",
	} {
		plan := plans[name]
		require.Contains(t, plan, "using "+index+" on runs", "%s:\n%s", name, plan)
		require.NotContains(t, plan, "Seq Scan", "%s:\n%s", name, plan)
		// A claim's read of its runs' signals (by the signals_by_run
		// index) is a subplan after the claim's own.
		claim, sigs, claims := strings.Cut(plan, "SubPlan")
		require.NotContains(t, claim, "Bitmap", "%s:\n%s", name, plan)
		if claims {
			require.Contains(t, sigs, "signals_by_run", "%s:\n%s", name, plan)
		}
	}
	for name, plan := range plans {
		t.Logf("%s:\n%s", name, plan)
	}
	// A look at the leases that expired lately reads only their part of
	// the index.
	require.Regexp(t, `Index Cond: \(\(lease_expires_at < now\(\)\) AND \(lease_expires_at >= `, plans["claim-expired-within"])
	// One queue's claim takes its order from the index: no sort at all.
	claim, _, _ := strings.Cut(plans["claim"], "SubPlan") // its runs' signals, in id order
	require.NotContains(t, claim, "Sort", "claim:\n%s", plans["claim"])
}

// A look at the leases that expired lately does not take one that expired
// before it (an earlier look saw that one); a look at all of them does.
func TestClaimExpiredWithin(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "expired.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+`
		(run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads) VALUES
		('old', 'old', 'expired.wf', 'default', 'running', 'gone', now() - interval '1 hour', 1),
		('new', 'new', 'expired.wf', 'default', 'running', 'gone', now() - interval '1 second', 1),
		('live', 'live', 'expired.wf', 'default', 'running', 'here', now() + interval '1 hour', 1)`)
	require.NoError(t, err)
	types := []string{"expired.wf"}

	ids, err := engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 10, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{"new"}, ids)
	ids, err = engine.ClaimExpiredForTest(ctx, e, "w2", "default", types, 10, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"old"}, ids, "the lease that expired an hour ago, not the live one nor the one w1 took")
}

// A claim of woken runs, or of new ones, changes only their leases: none of
// runs' indexed columns (the status stays waiting or pending), so every
// row's update is heap-only and writes no index entry. Claimed, a run is
// reported running.
func TestWakeClaimIsHeapOnly(t *testing.T) {
	t.Parallel()
	for _, status := range []engine.Status{engine.StatusWaiting, engine.StatusPending} {
		t.Run(string(status), func(t *testing.T) {
			t.Parallel()
			e, runs := slClaimEnv(t, "hot.wf")
			c := e.Client()
			ctx := testenv.Ctx(t, 30*time.Second)
			_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, wake_at, lease_owner, loads)
				SELECT 'r' || i, 'w' || i, 'hot.wf', 'default', $1, now() - i * interval '1 ms',
					CASE WHEN $1 = 'waiting' THEN 'gone' END, CASE WHEN $1 = 'waiting' THEN 1 ELSE 0 END
				FROM generate_series(1, 60) i`, status)
			require.NoError(t, err)

			updated, heapOnly, err := engine.ClaimUpdatesForTest(ctx, e, "w1", "default", []string{"hot.wf"}, 50, false)
			require.NoError(t, err)
			require.Equal(t, 50, updated)
			require.Equal(t, 50, heapOnly, "a claim's update that is not heap-only writes an entry in every index of runs")

			var got string
			var leased bool
			require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT status, lease_owner = 'w1' AND claimed_until > now() AND lease_expires_at IS NULL FROM `+runs+`
				WHERE run_id = 'r60'`).Scan(&got, &leased))
			require.Equal(t, string(status), got)
			require.True(t, leased)
			info, err := c.Describe(ctx, "w60")
			require.NoError(t, err)
			require.Equal(t, engine.StatusRunning, info.Status, "a claimed run is reported running")
			listed, err := c.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusRunning}})
			require.NoError(t, err)
			require.Len(t, listed, 50)
			listed, err = c.List(ctx, engine.ListFilter{Statuses: []engine.Status{status}})
			require.NoError(t, err)
			require.Len(t, listed, 10)
		})
	}
}

// The claim of due runs passes over the waiting runs a worker claimed
// (their lease is live) and takes those whose worker is gone (lease
// expired), but not the claiming worker's own runs whose renewal is late;
// the next wake time does not count the claimed ones either.
func TestClaimDuePassesOverLeasedRuns(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "leased.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	types := []string{"leased.wf"}
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+`
		(run_id, workflow_id, workflow_type, queue, status, wake_at, lease_owner, claimed_until, loads) VALUES
		('live', 'live', 'leased.wf', 'default', 'waiting', now() - interval '4 minutes', 'w1', now() + interval '1 hour', 2),
		('mine', 'mine', 'leased.wf', 'default', 'waiting', now() - interval '3 minutes', 'w2', now() - interval '1 second', 2),
		('gone', 'gone', 'leased.wf', 'default', 'waiting', now() - interval '2 minutes', 'w3', now() - interval '1 second', 2),
		('free', 'free', 'leased.wf', 'default', 'waiting', now() - interval '1 minute', NULL, NULL, 1)`)
	require.NoError(t, err)

	_, ok, err := engine.NextWakeForTest(ctx, e, "w2", "default", types)
	require.NoError(t, err)
	require.True(t, ok)
	got, err := engine.ClaimDueForTest(ctx, e, "w2", "default", types, 10, []string{"mine"})
	require.NoError(t, err)
	require.Equal(t, map[string]engine.Status{"gone": engine.StatusWaiting, "free": engine.StatusWaiting}, got)

	// Left: the live lease and w2's own late one. Neither is due to w2.
	_, ok, err = engine.NextWakeForTest(ctx, e, "w2", "default", types)
	require.NoError(t, err)
	require.False(t, ok, "a claimed run is no wake-up")
	got, err = engine.ClaimDueForTest(ctx, e, "w2", "default", types, 10, []string{"mine"})
	require.NoError(t, err)
	require.Empty(t, got)
	// Another worker takes w2's run whose lease expired.
	got, err = engine.ClaimDueForTest(ctx, e, "w4", "default", types, 10, []string{})
	require.NoError(t, err)
	require.Equal(t, map[string]engine.Status{"mine": engine.StatusWaiting}, got)
}

// A run claimed in its pending status (a heap-only claim) that stays open
// is marked running within about a second, not at its worker's next
// renewal (a third of LeaseTTL, here 20 minutes): until then a claim of
// due runs passes over it at the head of the (queue, wake_at) index.
func TestLongClaimedRunIsMarkedRunning(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	act := engine.NewActivity("promote.block", func(ctx context.Context, _ int) (int, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 0, nil
	})
	wf := engine.NewWorkflow("promote.wf", func(ctx engine.Context, _ int) (int, error) {
		return act.Run(ctx, 0)
	})
	e := testenv.Engine(t, &engine.Config{LeaseTTL: time.Hour})
	require.NoError(t, e.Register(wf, act))
	starter := testenv.Engine(t, &engine.Config{Schema: e.Schema(), LeaseTTL: time.Hour})
	require.NoError(t, starter.Register(wf, act))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	// Started where no worker runs: inserted pending, claimed by e's worker.
	_, err := wf.Start(ctx, starter.Client(), 0, &engine.StartOptions{ID: "long"})
	require.NoError(t, err)
	runs := pq.QuoteIdentifier(e.Schema()) + ".runs"
	testenv.Eventually(t, 30*time.Second, func() bool {
		var status string
		var claimed bool
		err := e.DB().QueryRowContext(ctx, `SELECT status, claimed_until IS NOT NULL FROM `+runs+` WHERE workflow_id = 'long'`).Scan(&status, &claimed)
		return err == nil && status == "running" && !claimed
	}, "the claimed run was not marked running")
	close(release)
}

// A claim of runs whose leases expired (their worker died) changes only
// their leases, as a wake claim does: the run stays running, leased until
// claimed_until, so every row's update is heap-only. Another worker's look
// for expired leases does not take them again while that lease holds; a
// successor with the claimer's ID hands them on at once.
func TestExpiredClaimIsHeapOnly(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "hotexp.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	types := []string{"hotexp.wf"}
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads)
		SELECT 'r' || i, 'w' || i, 'hotexp.wf', 'default', 'running', 'gone', now() - i * interval '1 ms', 1
		FROM generate_series(1, 60) i`)
	require.NoError(t, err)

	updated, heapOnly, err := engine.ClaimUpdatesForTest(ctx, e, "w1", "default", types, 50, true)
	require.NoError(t, err)
	require.Equal(t, 50, updated)
	require.Equal(t, 50, heapOnly, "a claim's update that is not heap-only writes an entry in every index of runs")

	ids, err := engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 100, 0)
	require.NoError(t, err)
	require.Len(t, ids, 10, "the ten left")
	var leased int
	require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT count(*) FROM `+runs+`
		WHERE status = 'running' AND lease_owner = 'w1' AND claimed_until > now() AND loads = 2`).Scan(&leased))
	require.Equal(t, 60, leased)
	ids, err = engine.ClaimExpiredForTest(ctx, e, "w2", "default", types, 100, 0)
	require.NoError(t, err)
	require.Empty(t, ids, "runs w1 holds were claimed again")

	// A successor of w1 with its ID gives them up at once, where a look
	// at the leases that expired lately finds them.
	require.NoError(t, engine.ExpireLeasesForTest(ctx, e, "w1"))
	ids, err = engine.ClaimExpiredForTest(ctx, e, "w2", "default", types, 100, 10*time.Second)
	require.NoError(t, err)
	require.Len(t, ids, 60)
}

// A run whose worker died, taken by another worker's look for expired
// leases, keeps its expired lease_expires_at (the claim is heap-only) and
// is leased until claimed_until. If that worker dies too, before its
// promotion pass moves the lease, the run is due to the windowed look that
// follows the end of claimed_until, the narrowest a worker makes, not only
// to a look at every expired lease (every expiredFullEvery looks, minutes
// at the default LeaseTTL). Time passing is the rows' timestamps moved
// back by the claim's lease period, so no look depends on the clock.
func TestExpiredClaimOrphanedAgainIsInNextWindow(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "orphan2.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	types := []string{"orphan2.wf"}
	window := engine.ExpiredLookWindowForTest(e)
	// 'edge' expired as early as w1's look reached (a second inside its
	// window), 'late' just now.
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads) VALUES
		('edge', 'edge', 'orphan2.wf', 'default', 'running', 'gone', now() - $1::interval + interval '1 second', 1),
		('late', 'late', 'orphan2.wf', 'default', 'running', 'gone', now() - interval '10 ms', 1)`,
		fmt.Sprintf("%d milliseconds", window.Milliseconds()))
	require.NoError(t, err)
	ids, err := engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 10, window)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"edge", "late"}, ids)

	// w1 dies before its promotion pass: a lease period later its claim
	// ran out a second ago.
	_, err = e.DB().ExecContext(ctx, `UPDATE `+runs+` SET
		lease_expires_at = lease_expires_at - (claimed_until - now()) - interval '1 second',
		claimed_until = now() - interval '1 second'`)
	require.NoError(t, err)

	ids, err = engine.ClaimExpiredForTest(ctx, e, "w2", "default", types, 10, window)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"edge", "late"}, ids, "runs whose claimer died too were left to a look at every expired lease")
}

// A look that reads further back than a worker's narrowest window (its
// look at every expired lease, or its first look after a stall) takes runs
// whose lease_expires_at is older than that window reaches. If the
// claimer dies before its promotion pass, the run must still be due to the
// first windowed look after the claim ran out: before, its old
// lease_expires_at kept it outside every windowed look, and it waited for
// some worker's next look at every expired lease (every expiredFullEvery
// looks, about 4 minutes at the default LeaseTTL). The same holds for a
// third claimer, which took the run from the wider range a windowed look
// reads (see store.claimExpiredSQL). Time passing is the rows' timestamps
// moved back, so no look depends on the clock.
func TestExpiredClaimOfAnOldLeaseOrphanedAgainIsInNextWindow(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "orphan3.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	types := []string{"orphan3.wf"}
	window := engine.ExpiredLookWindowForTest(e)
	ms := func(d time.Duration) string { return fmt.Sprintf("%d milliseconds", d.Milliseconds()) }
	for _, c := range []struct {
		name string
		age  time.Duration // of the lease when w1 looks
		w1   time.Duration // w1's window (0: every expired lease)
	}{
		{"look at every expired lease", 200 * time.Second, 0},
		{"first look after a stall", 80 * time.Second, 90 * time.Second},
		{"windowed looks only", window - time.Second, window},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.DB().ExecContext(ctx, `DELETE FROM `+runs)
			require.NoError(t, err)
			_, err = e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads)
				VALUES ('old', 'old', 'orphan3.wf', 'default', 'running', 'gone', now() - $1::interval, 1)`, ms(c.age))
			require.NoError(t, err)
			// orphan: the claimers so far died before their promotion pass,
			// and a lease period has passed since the last claim: its
			// claim ran out a second ago.
			orphan := func() {
				_, err := e.DB().ExecContext(ctx, `UPDATE `+runs+` SET
					lease_expires_at = lease_expires_at - (claimed_until - now()) - interval '1 second',
					claimed_until = now() - interval '1 second'`)
				require.NoError(t, err)
			}
			ids, err := engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 10, c.w1)
			require.NoError(t, err)
			require.Equal(t, []string{"old"}, ids)
			orphan()

			ids, err = engine.ClaimExpiredForTest(ctx, e, "w2", "default", types, 10, window)
			require.NoError(t, err)
			require.Equal(t, []string{"old"}, ids, "a run whose claimer died too was left to a look at every expired lease")
			orphan()

			ids, err = engine.ClaimExpiredForTest(ctx, e, "w3", "default", types, 10, window)
			require.NoError(t, err)
			require.Equal(t, []string{"old"}, ids, "a run orphaned a third time was left to a look at every expired lease")
		})
	}
}

// A run whose lease expired while its row was locked (a client's signal or
// cancel, say) is skipped by the windowed look that reached it (SKIP
// LOCKED). The looks after it must still take it while its expiry is
// within the range they read (their window and two lease periods), not
// leave it to a look at every expired lease, minutes later.
func TestExpiredLeaseSkippedWhileLockedIsInNextWindow(t *testing.T) {
	t.Parallel()
	e, runs := slClaimEnv(t, "skipped.wf")
	ctx := testenv.Ctx(t, 30*time.Second)
	types := []string{"skipped.wf"}
	window := engine.ExpiredLookWindowForTest(e)
	_, err := e.DB().ExecContext(ctx, `INSERT INTO `+runs+` (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads)
		VALUES ('locked', 'locked', 'skipped.wf', 'default', 'running', 'gone', now() - interval '10 ms', 1)`)
	require.NoError(t, err)
	tx, err := e.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `SELECT 1 FROM `+runs+` WHERE run_id = 'locked' FOR UPDATE`)
	require.NoError(t, err)
	ids, err := engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 10, window)
	require.NoError(t, err)
	require.Empty(t, ids, "a locked row was claimed")
	require.NoError(t, tx.Rollback())

	// The next look comes a window later.
	_, err = e.DB().ExecContext(ctx, `UPDATE `+runs+` SET lease_expires_at = lease_expires_at - $1::interval`,
		fmt.Sprintf("%d milliseconds", window.Milliseconds()))
	require.NoError(t, err)
	ids, err = engine.ClaimExpiredForTest(ctx, e, "w1", "default", types, 10, window)
	require.NoError(t, err)
	require.Equal(t, []string{"locked"}, ids, "a run skipped while locked was left to a look at every expired lease")
}
