package tasks_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// No double processing: two intakes and two stand-ins for the legacy runner
// race over the same 20,000 rows while the flags change mid-run (a raised
// percentage, a kind's kill switch and its release, a new kind, and at the
// end the global kill switch). Every row is processed exactly once by
// exactly one side, none is lost, every graft row has exactly one run and
// one recorded decision, and no claim commits after the global kill switch.
// Without the routed_to_graft predicate the runner still never takes a row
// twice or one graft took; only the split no longer follows the flags.
func TestNoDoubleProcessingRace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		predicate bool
	}{{"with predicate", true}, {"without predicate", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raceRun(t, tc.predicate)
		})
	}
}

func raceRun(t *testing.T, predicate bool) {
	const rows = 20000
	v := newEnv(t)
	s := pq.QuoteIdentifier(v.schema)
	_, err := v.db.Exec(`CREATE TABLE ` + s + `.legacy_log (id bigint NOT NULL, flags_version bigint NOT NULL)`)
	require.NoError(t, err)
	const duringKill = 2000 // .info renewals inserted while renew is killed
	v.insert(t, rows*3/4-duringKill, "renew", "info", "fr", "com", "de")
	v.insert(t, rows/4, "transfer", "info", "com")
	intakes := []*tasks.Intake{}
	for i := 0; i < 2; i++ {
		intakes = append(intakes, v.intake(t, v.source(), func(c *tasks.IntakeConfig) { c.BatchSize = 150; c.PollInterval = 20 * time.Millisecond }))
	}
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 20, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, in := range intakes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := in.Run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	// The legacy runner claims without SKIP LOCKED: it waits on rows intake
	// holds and re-checks their status once intake commits.
	pred := ""
	if predicate {
		pred = ` AND NOT ` + s + `.routed_to_graft(kind, lower(substring(domain from '[^.]+$')), id::text)`
	}
	runner := `WITH u AS (UPDATE ` + v.table + ` SET status = 'legacy'
			WHERE id IN (SELECT id FROM ` + v.table + ` WHERE status = 'pending'` + pred + ` ORDER BY id DESC LIMIT 100) AND status = 'pending'
			RETURNING id)
		INSERT INTO ` + s + `.legacy_log SELECT id, (SELECT version FROM ` + s + `.flags_state) FROM u`
	runnerDone := make(chan struct{})
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-runnerDone:
					return
				default:
				}
				_, err := v.db.ExecContext(ctx, runner)
				var pe *pq.Error
				if errors.As(err, &pe) && pe.Code == "40P01" {
					continue // the two runners locked rows in opposite orders; a runner retries, as a real one would
				}
				if err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}()
	}

	// Flag changes, each when processing has reached a point.
	processed := func() int { return v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status <> 'pending'`) }
	waitFor := func(n int) {
		testenv.Eventually(t, 2*time.Minute, func() bool { return processed() >= n }, "processing never reached %d rows", n)
	}
	waitFor(rows / 10)
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 20, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 80}}})
	waitFor(rows * 3 / 10)
	killed := v.setFlag(t, tasks.Flag{Kind: "renew", Killed: true, DefaultPercent: 20, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	require.True(t, killed.Killed)
	var before int
	require.NoError(t, v.db.Get(&before, `SELECT max(id) FROM `+v.table))
	v.insert(t, duringKill, "renew", "info")
	testenv.Eventually(t, 2*time.Minute, func() bool {
		return v.count(t, `SELECT count(*) FROM `+v.table+` WHERE id > $1 AND status <> 'pending'`, before) == duringKill
	}, "the renewals inserted under the kill switch were not all processed")
	require.Equal(t, duringKill, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE id > $1 AND status = 'legacy'`, before),
		"a renewal inserted under the kill switch went to graft")
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 20, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	v.setFlag(t, tasks.Flag{Kind: "transfer", DefaultPercent: 60})
	waitFor(rows * 7 / 10)
	snap, err := v.flags.Snapshot(context.Background())
	require.NoError(t, err)
	killVersion, err := v.flags.GlobalKill(context.Background(), true, snap.Version, "test", "stop")
	if err != nil { // the cache was a change behind
		require.NoError(t, v.db.Get(&snap.Version, `SELECT version FROM `+s+`.flags_state`))
		killVersion, err = v.flags.GlobalKill(context.Background(), true, snap.Version, "test", "stop")
	}
	require.NoError(t, err)
	claimsAtKill := v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`)
	waitFor(rows)
	close(runnerDone)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	_, err = v.db.Exec(`CREATE INDEX ON ` + s + `.legacy_log (id); ANALYZE ` + s + `.legacy_log; ANALYZE ` + v.table)
	require.NoError(t, err)
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`), "lost rows")
	graft := v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'graft'`)
	legacy := v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'legacy'`)
	require.Equal(t, rows, graft+legacy)
	require.Greater(t, graft, 0)
	require.Greater(t, legacy, 0)
	require.Equal(t, legacy, v.count(t, `SELECT count(*) FROM `+s+`.legacy_log`), "the legacy runner took a row twice")
	require.Equal(t, legacy, v.count(t, `SELECT count(DISTINCT id) FROM `+s+`.legacy_log`))
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.legacy_log l JOIN `+v.table+` o ON o.id = l.id WHERE o.status <> 'legacy'`))
	require.Equal(t, graft, v.count(t, `SELECT count(*) FROM `+s+`.runs`), "one run per graft row")
	require.Equal(t, graft, v.count(t, `SELECT count(*) FROM `+s+`.runs r JOIN `+v.table+` o ON o.id::text = r.workflow_id WHERE o.status = 'graft'`))
	require.Equal(t, graft, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims c JOIN `+s+`.runs r ON r.run_id = c.run_id AND r.workflow_id = c.operation_id`))
	require.Equal(t, claimsAtKill, graft, "a claim committed after the global kill switch")
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims WHERE flags_version >= $1`, killVersion))
	// The flags in force at a flag set version: kind's kill switch, and
	// the global one.
	killedAt := func(kind, version string) string {
		return `COALESCE((SELECT (a.new_value->>'killed')::boolean FROM ` + s + `.flags_audit a
			WHERE a.kind = '` + kind + `' AND a.flags_version <= ` + version + ` ORDER BY a.flags_version DESC LIMIT 1), false)`
	}
	if predicate {
		// .info renewals are graft's whenever neither kill switch is on:
		// the runner never took one then.
		require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.legacy_log l JOIN `+v.table+` o ON o.id = l.id
			WHERE o.kind = 'renew' AND o.domain LIKE '%.info' AND NOT `+killedAt("renew", "l.flags_version")+` AND NOT `+killedAt("*", "l.flags_version")),
			"the runner took a .info renewal the flags gave to graft")
	}
	// No renewal was claimed under renew's kill switch.
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims c WHERE c.kind = 'renew' AND `+killedAt("renew", "c.flags_version")))
}
