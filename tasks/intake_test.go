package tasks_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// Intake claims exactly the rows the flags route to graft, starts one run per
// row with the operation ID as workflow ID, records each decision, and leaves
// every other row as it was.
// It does so whether the source's key and input are columns (the claim
// query routes and builds the input), the key is a Go function (every
// pending row is read and routed in Go), or the input is.
func TestIntakeClaimsWhatTheFlagsRouteToGraft(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mut  func(*tasks.Source)
	}{
		{"columns", func(*tasks.Source) {}},
		{"key function", func(s *tasks.Source) {
			s.Key = tasks.KeySpec{Fn: func(r tasks.Row) (string, error) { return lastLabel(strings.ToLower(r.String("domain"))), nil }}
		}},
		{"input function", func(s *tasks.Source) {
			s.Input, s.InputFn = nil, func(r tasks.Row) (any, error) {
				return map[string]any{"domain": r.String("domain"), "years": r.Columns["years"]}, nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			claimsWhatTheFlagsRoute(t, tc.mut)
		})
	}
}

func claimsWhatTheFlagsRoute(t *testing.T, mut func(*tasks.Source)) {
	v := newEnv(t)
	src := v.source()
	mut(src)
	in := v.intake(t, src, func(c *tasks.IntakeConfig) { c.BatchSize = 7 })
	v.insert(t, 200, "renew", "info", "fr", "com")
	v.insert(t, 50, "transfer", "info")
	v.insert(t, 30, "unmanaged", "info")
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 0, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}})

	started := drain(t, in)
	s := pq.QuoteIdentifier(v.schema)
	// What the flags imply, computed in Go from the rows.
	rows, err := v.db.Query(`SELECT id::text, kind, domain, status FROM ` + v.table)
	require.NoError(t, err)
	defer rows.Close()
	snap, err := v.flags.Snapshot(context.Background())
	require.NoError(t, err)
	want := 0
	for rows.Next() {
		var id, kind, domain, status string
		require.NoError(t, rows.Scan(&id, &kind, &domain, &status))
		tld := domain[len(domain)-len(lastLabel(domain)):]
		d := tasks.Evaluate(snap, kind, tld, id)
		if kind != "renew" && kind != "transfer" {
			d.Route = tasks.RouteLegacy
		}
		if d.Route == tasks.RouteGraft {
			want++
			require.Equal(t, "graft", status, "operation %s (%s, %s)", id, kind, domain)
		} else {
			require.Equal(t, "pending", status, "operation %s (%s, %s) is left to legacy", id, kind, domain)
		}
	}
	require.NoError(t, rows.Err())
	require.Greater(t, want, 67+10, "the .info rows and about half the .fr rows")
	require.Equal(t, want, started)
	require.Equal(t, want, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Equal(t, want, v.count(t, `SELECT count(DISTINCT workflow_id) FROM `+s+`.runs r JOIN `+v.table+` o ON o.id::text = r.workflow_id AND o.status = 'graft'`))
	require.Equal(t, want, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims c JOIN `+s+`.runs r ON r.run_id = c.run_id
		WHERE c.flags_version = $1 AND c.rule = 'key' AND c.routing_key IN ('info', 'fr') AND c.customer LIKE 'cust-%'`, snap.Version))
	var hdr string
	require.NoError(t, v.db.Get(&hdr, `SELECT headers->>'`+tasks.CustomerHeader+`' FROM `+s+`.runs LIMIT 1`))
	require.Contains(t, hdr, "cust-")

	// A second intake over the same table finds nothing left to take.
	require.Zero(t, drain(t, v.intake(t, v.source(), nil)))
}

func lastLabel(domain string) string {
	for i := len(domain) - 1; i >= 0; i-- {
		if domain[i] == '.' {
			return domain[i+1:]
		}
	}
	return domain
}

// Run is woken by the legacy application's NOTIFY (polling is off here) and
// its workflows run on a worker.
func TestIntakeRunWokenByNotify(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	src := v.source()
	src.Notify = v.schema + "_ops"
	in := v.intake(t, src, func(c *tasks.IntakeConfig) { c.PollInterval = time.Hour })
	testenv.Worker(t, v.e, engine.WorkerConfig{})
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	// Run's first pass may have gone by already: wake it with a notification.
	v.insert(t, 5, "renew", "com")
	_, err := v.db.Exec(`SELECT pg_notify($1, '')`, src.Notify)
	require.NoError(t, err)
	s := pq.QuoteIdentifier(v.schema)
	testenv.Eventually(t, 30*time.Second, func() bool {
		return v.count(t, `SELECT count(*) FROM `+s+`.runs WHERE status = 'completed'`) == 5
	}, "the five renewals were not claimed and completed")
}

// A row whose input does not decode is left pending with its error named in
// the error column; intake goes on with the others.
func TestIntakeBadRowIsLeftPendingWithItsError(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	in := v.intake(t, v.source(), nil)
	v.insert(t, 10, "renew", "com")
	_, err := v.db.Exec(`UPDATE ` + v.table + ` SET years = '"two"' WHERE id = 3`)
	require.NoError(t, err)
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	require.Equal(t, 9, drain(t, in))
	var status, msg string
	require.NoError(t, v.db.QueryRow(`SELECT status, last_error FROM `+v.table+` WHERE id = 3`).Scan(&status, &msg))
	require.Equal(t, "pending", status)
	require.Contains(t, msg, "years")
	require.Contains(t, msg, "renew")

	// Fixed by an operator, it is taken on the next pass; the error is cleared.
	_, err = v.db.Exec(`UPDATE ` + v.table + ` SET years = '2' WHERE id = 3`)
	require.NoError(t, err)
	require.Equal(t, 1, drain(t, in))
	require.NoError(t, v.db.QueryRow(`SELECT status, COALESCE(last_error, '') FROM `+v.table+` WHERE id = 3`).Scan(&status, &msg))
	require.Equal(t, "graft", status)
	require.Empty(t, msg)
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// A row that keeps failing is logged once per distinct error, not on every
// pass, and every failed attempt is counted in MetricFailed.
func TestIntakeLogsAFailingRowOncePerError(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	logs := &syncBuffer{}
	reader := sdkmetric.NewManualReader()
	in := v.intake(t, v.source(), func(c *tasks.IntakeConfig) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	})
	v.insert(t, 3, "renew", "com")
	_, err := v.db.Exec(`UPDATE ` + v.table + ` SET years = '"two"' WHERE id = 2`)
	require.NoError(t, err)
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	const passes = 5
	for i := 0; i < passes; i++ {
		res, err := in.ClaimBatch(context.Background())
		require.NoError(t, err)
		require.Equal(t, 1, res.Failed)
	}
	require.Equal(t, 1, logs.count("left pending"), "logged once: %s", logs.b.String())
	require.Equal(t, map[string]float64{"": passes}, metricPoints(t, reader)[tasks.MetricFailed])

	// Another error on the same row is logged, once.
	_, err = v.db.Exec(`UPDATE ` + v.table + ` SET years = '[1]' WHERE id = 2`)
	require.NoError(t, err)
	for i := 0; i < passes; i++ {
		_, err := in.ClaimBatch(context.Background())
		require.NoError(t, err)
	}
	require.Equal(t, 2, logs.count("left pending"), "logged once per error: %s", logs.b.String())
	require.Equal(t, map[string]float64{"": 2 * passes}, metricPoints(t, reader)[tasks.MetricFailed])
	// Fixed, it is taken; if it broke again later it would be logged again.
	_, err = v.db.Exec(`UPDATE ` + v.table + ` SET years = '1' WHERE id = 2`)
	require.NoError(t, err)
	res, err := in.ClaimBatch(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, res.Started)
}
