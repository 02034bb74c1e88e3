package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"

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
	db, err := openDB(20)
	if err != nil {
		return err
	}
	defer db.Close()
	schema := pq.QuoteIdentifier(o.schema)
	if !o.keep {
		defer func() { _, _ = db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) }()
	}
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: o.schema, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		Input:  map[string]string{"domain": "domain"}, CreatedAt: "created_at"}
	var intakes []*tasks.Intake
	for i := 0; i < 2; i++ {
		it, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: databaseURL(), Source: src, BatchSize: 1000,
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
	for {
		var pending, graft int
		if err := db.QueryRow(`SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'graft') FROM `+table).Scan(&pending, &graft); err != nil {
			cancel()
			return err
		}
		if graft >= want && graftDone == 0 {
			graftDone = time.Since(start)
		}
		if pending == 0 || runnerErr != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runnerErr != nil {
		return fmt.Errorf("legacy runner: %w", runnerErr)
	}
	if graftDone == 0 {
		graftDone = time.Since(start)
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
	fmt.Printf("flags imply graft=%d (%.2f%%); elapsed %.1fs, graft claims done at %.1fs\n", want, 100*float64(want)/float64(o.n), time.Since(start).Seconds(), graftDone.Seconds())
	fmt.Printf("intake rows=%d graft=%d legacy=%d double_processed=%d lost=%d claims_per_s=%.0f\n", o.n, g, l, double, lost, float64(g)/graftDone.Seconds())
	return nil
}
