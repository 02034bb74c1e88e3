package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks"
)

// benchIntake fills a legacy table with n pending rows across three kinds
// and five TLDs, routes 50% of renewals to graft by percentage and .info
// transfers at 100%, and runs two intakes and a legacy runner (with the
// routed_to_graft predicate) together until no row is pending. It reports
// the split, double processing, lost rows, and graft claims (claim and
// start, not completion) per second.
func benchIntake(o benchOpts) error {
	ctx := context.Background()
	// The intakes have a pool of their own that counts what they send to
	// PostgreSQL (SQL round trips per claimed row, a figure the machine's
	// load does not change); the legacy runner and this loop use db.
	db, err := openDB(20)
	if err != nil {
		return err
	}
	defer db.Close()
	counters := &dbCounters{}
	intakeDB, err := openCountingDB(20, counters)
	if err != nil {
		return err
	}
	defer intakeDB.Close()
	schema := pq.QuoteIdentifier(o.schema)
	if !o.keep {
		defer func() { _, _ = db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) }()
	}
	e, err := engine.New(engine.Config{DB: intakeDB, DatabaseURL: databaseURL(), Schema: o.schema, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		return err
	}
	if err := tasks.Migrate(ctx, db, o.schema); err != nil {
		return err
	}
	type in struct {
		Domain string `json:"domain"`
	}
	if err := e.Register(engine.NewWorkflow("bench.renew", func(engine.Context, in) (string, error) { return "", nil }),
		engine.NewWorkflow("bench.transfer", func(engine.Context, in) (string, error) { return "", nil })); err != nil {
		return err
	}
	table := schema + ".operations"
	if _, err := db.Exec(`CREATE TABLE ` + table + ` (id bigserial PRIMARY KEY, kind text NOT NULL, domain text NOT NULL,
		status text NOT NULL DEFAULT 'pending', created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE ` + schema + `.legacy_log (id bigint NOT NULL)`); err != nil {
		return err
	}
	if _, err := db.Exec(`INSERT INTO `+table+` (kind, domain)
		SELECT (ARRAY['renew','renew','renew','renew','renew','transfer','transfer','transfer','refund','refund'])[1 + i % 10],
			'd' || i || '.' || (ARRAY['info','fr','com','de','net'])[1 + (i / 10) % 5]
		FROM generate_series(1, $1) i`, o.n); err != nil {
		return err
	}
	src := &tasks.Source{Table: o.schema + ".operations", ID: "id", Kind: "kind",
		Kinds:  map[string]tasks.KindSpec{"renew": {Workflow: "bench.renew"}, "transfer": {Workflow: "bench.transfer"}},
		Key:    tasks.KeySpec{Column: "domain", Transform: tasks.TransformTLD},
		Status: tasks.StatusSpec{Column: "status", Pending: "pending", Graft: "graft", Legacy: "legacy"},
		// No CreatedAt: the lag gauge would scan the table at each read of
		// the metrics, which this loop does every 20 ms.
		Input: map[string]string{"domain": "domain"}}
	// The intakes' claims are counted through their metrics, so that
	// watching them costs PostgreSQL nothing.
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	claimed := func() int64 {
		var rm metricdata.ResourceMetrics
		_ = reader.Collect(ctx, &rm)
		var n int64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == tasks.MetricClaimed {
					for _, p := range sum.DataPoints {
						if v, _ := p.Attributes.Value(tasks.AttrRoute); v.AsString() == string(tasks.RouteGraft) {
							n += p.Value
						}
					}
				}
			}
		}
		return n
	}
	var intakes []*tasks.Intake
	for i := 0; i < 2; i++ {
		it, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: databaseURL(), Source: src, BatchSize: 1000, MeterProvider: meters,
			PollInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return err
		}
		defer it.Close()
		intakes = append(intakes, it)
	}
	flags, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: databaseURL(), Schema: o.schema})
	if err != nil {
		return err
	}
	defer flags.Close()
	for _, f := range []tasks.Flag{{Kind: "renew", DefaultPercent: 50}, {Kind: "transfer", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}}} {
		if _, err := flags.Set(ctx, tasks.Change{Flag: f, Actor: "bench", Reason: "bench"}); err != nil {
			return err
		}
	}
	var want int
	if err := db.Get(&want, `SELECT count(*) FROM `+table+` WHERE `+schema+`.routed_to_graft(kind, lower(substring(domain from '[^.]+$')), id::text)`); err != nil {
		return err
	}
	if _, err := db.Exec(`ANALYZE ` + table); err != nil {
		return err
	}

	runner := `WITH c AS (SELECT id FROM ` + table + ` WHERE status = 'pending'
			AND NOT ` + schema + `.routed_to_graft(kind, lower(substring(domain from '[^.]+$')), id::text)
			ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED),
		u AS (UPDATE ` + table + ` o SET status = 'legacy' FROM c WHERE o.id = c.id AND o.status = 'pending' RETURNING o.id)
		INSERT INTO ` + schema + `.legacy_log SELECT id FROM u`
	roundTrips0 := counters.roundTrips.Load()
	start := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, it := range intakes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = it.Run(runCtx) }()
	}
	var runnerErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for runCtx.Err() == nil {
			if _, err := db.ExecContext(runCtx, runner); err != nil && runCtx.Err() == nil {
				runnerErr = err
				return
			}
		}
	}()
	var graftDone time.Duration
	var roundTrips int64 // the intakes', until graft's rows were all claimed
	// Graft's claims are watched every 20 ms through the metrics, the
	// pending rows every 200 ms with a query.
	for i := 0; runnerErr == nil; i++ {
		if graftDone == 0 && claimed() >= int64(want) {
			graftDone = time.Since(start)
			roundTrips = counters.roundTrips.Load() - roundTrips0
		}
		if i%10 == 0 {
			var pending bool
			if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM ` + table + ` WHERE status = 'pending')`).Scan(&pending); err != nil {
				cancel()
				return err
			}
			if !pending {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runnerErr != nil {
		return fmt.Errorf("legacy runner: %w", runnerErr)
	}
	if graftDone == 0 {
		graftDone = time.Since(start)
		roundTrips = counters.roundTrips.Load() - roundTrips0
	}
	var g, l, double, lost int
	if err := db.QueryRow(`SELECT count(*) FILTER (WHERE status = 'graft'), count(*) FILTER (WHERE status = 'legacy') FROM `+table).Scan(&g, &l); err != nil {
		return err
	}
	if err := db.Get(&double, `SELECT
			(SELECT count(*) - count(DISTINCT id) FROM `+schema+`.legacy_log)
			+ (SELECT count(*) FROM `+schema+`.legacy_log l JOIN `+table+` o ON o.id = l.id WHERE o.status <> 'legacy')
			+ (SELECT count(*) - count(DISTINCT workflow_id) FROM `+schema+`.runs)
			+ (SELECT count(*) FROM `+schema+`.runs r JOIN `+table+` o ON o.id::text = r.workflow_id WHERE o.status <> 'graft')`); err != nil {
		return err
	}
	if err := db.Get(&lost, `SELECT (SELECT count(*) FROM `+table+` WHERE status NOT IN ('graft', 'legacy'))
			+ (SELECT count(*) FROM `+table+` o WHERE o.status = 'graft' AND NOT EXISTS (SELECT 1 FROM `+schema+`.runs r WHERE r.workflow_id = o.id::text))`); err != nil {
		return err
	}
	seen, err := flagChangeSeen(ctx, flags, intakeDB, o.schema)
	if err != nil {
		return err
	}
	fmt.Printf("flags change seen by another process after %.1f ms (LISTEN/NOTIFY; its cache would keep the old flags for an hour)\n", float64(seen.Microseconds())/1000)
	fmt.Printf("intake SQL round trips=%d (%.4f per claimed row, until the last was claimed)\n", roundTrips, float64(roundTrips)/float64(max(g, 1)))
	fmt.Printf("flags imply graft=%d (%.2f%%); elapsed %.1fs, graft claims done at %.1fs\n", want, 100*float64(want)/float64(o.n), time.Since(start).Seconds(), graftDone.Seconds())
	fmt.Printf("intake rows=%d graft=%d legacy=%d double_processed=%d lost=%d claims_per_s=%.0f\n", o.n, g, l, double, lost, float64(g)/graftDone.Seconds())
	return nil
}

// flagChangeSeen changes a flag through flags and returns how long a second
// Flags (another pool, another LISTEN connection, a cache kept for an hour)
// took to hear of it.
func flagChangeSeen(ctx context.Context, flags *tasks.Flags, otherDB *sqlx.DB, schema string) (time.Duration, error) {
	other, err := tasks.NewFlags(tasks.FlagsConfig{DB: otherDB, DatabaseURL: databaseURL(), Schema: schema, MaxStale: time.Hour})
	if err != nil {
		return 0, err
	}
	defer other.Close()
	snap, err := other.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	f := *snap.Flags["renew"]
	changed := other.Changed()
	start := time.Now()
	if _, err := flags.Set(ctx, tasks.Change{Flag: f, Version: f.Version, Actor: "bench", Reason: "propagation"}); err != nil {
		return 0, err
	}
	select {
	case <-changed:
		return time.Since(start), nil
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("bench: a flag change was not heard by another process within 10 s")
	}
}
