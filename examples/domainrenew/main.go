// Command domainrenew is graft's headline demo, the story graft comes from:
// a domain registrar moves its renewals off a legacy job runner onto
// durable workflows, one TLD at a time, behind feature flags, without
// changing its operations table, the API that reads it, or its customers.
//
// In one process it builds the legacy world (a schema with an operations
// table, a read API over HTTP, a slow job runner) and a fake registry on
// loopback HTTP that allows 50 calls in flight and 500 per second (429
// beyond, counted as violations) and fails a few percent of calls. Then
// graft: intake routes .info renewals 100% and .fr 50% to graft, leaving
// the rest to the legacy runner; the renewal workflow runs through the
// interceptor chain (tracing and metrics, the registry's rate limit in
// Redis, refunds on cancellation, the legacy row's status mirrored in the
// checkpoint transaction). The 1st of the month arrives: -n renewals at
// once, a few premium ones waiting for their customers (one confirms, the
// others cancel and are refunded). The summary reads every operation back
// through the legacy API and compares it with the engine. The last line:
//
//	demo ops=N graft=G legacy=L completed=C cancelled=X refunds=R violations=V mismatches=M
//
// Run it with `make demo` (PostgreSQL and Redis from GRAFT_DATABASE_URL
// and GRAFT_REDIS_URL). Everything it creates (two schemas, a Redis key
// prefix) is removed at the end unless -keep is given.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/examples/exampleenv"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/ratelimit"
	graftsync "github.com/graftdev/graft/sync"
	"github.com/graftdev/graft/tasks"
)

// options are the command line's settings.
type options struct {
	DatabaseURL, RedisURL string
	Schema                string
	Keep                  bool
	// N is the number of renewals in the burst.
	N int
	// LegacyDelay is the legacy runner's pace per renewal (the old path
	// took minutes); LegacyWorkers its parallelism.
	LegacyDelay   time.Duration
	LegacyWorkers int
	// Progress receives the progress bar; nil: none.
	Progress io.Writer
	// Serve, when set, is the address on which the operations API and web
	// UI stay up after the summary, until the run's context ends.
	Serve string
	// onServe is told the server's base URL and operator token (tests).
	onServe func(base, token string)
}

func main() {
	o := options{DatabaseURL: exampleenv.DatabaseURL(), RedisURL: exampleenv.RedisURL(), Progress: os.Stderr}
	flag.IntVar(&o.N, "n", 500, "renewals in the 1st-of-the-month burst")
	flag.StringVar(&o.Schema, "schema", "graft_demo", "graft's schema; the legacy world's is this with _legacy")
	flag.BoolVar(&o.Keep, "keep", false, "keep the schemas at the end, to look at the tables")
	flag.DurationVar(&o.LegacyDelay, "legacy-delay", 2*time.Second, "the legacy runner's time per renewal")
	flag.IntVar(&o.LegacyWorkers, "legacy-workers", 100, "the legacy runner's workers")
	flag.StringVar(&o.Serve, "serve", "", "after the summary, keep the operations API and web UI up on this address (e.g. 127.0.0.1:8080) until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	last, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	fmt.Println(last)
}

// premiumDomains need their customer's confirmation; the first confirms,
// the others cancel.
var premiumDomains = []string{"gold-1.info", "gold-2.info", "gold-3.info", "gold-4.info"}

// run plays the demo and returns its last line, printed by main after
// everything is cleaned up.
func run(ctx context.Context, o options, out io.Writer) (last string, err error) {
	if o.N < len(premiumDomains)*3 {
		return "", fmt.Errorf("-n must be at least %d", len(premiumDomains)*3)
	}
	o.LegacyWorkers = max(o.LegacyWorkers, 1)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	// ---- storage: graft's schema and the legacy world's, a Redis prefix
	env, err := exampleenv.Setup(ctx, exampleenv.Options{Owner: "domainrenew", DatabaseURL: o.DatabaseURL, Schema: o.Schema, Keep: o.Keep})
	if err != nil {
		return "", err
	}
	defer env.Close(&err)
	db := env.DB
	db.SetMaxOpenConns(40)
	legacySchema := o.Schema + "_legacy"
	dropLegacy, err := exampleenv.Schema(ctx, db, "domainrenew", legacySchema, false)
	if err != nil {
		return "", err
	}
	if !o.Keep {
		defer func() { err = errors.Join(err, dropLegacy(context.Background())) }()
	}
	ropts, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return "", fmt.Errorf("GRAFT_REDIS_URL: %w", err)
	}
	rc := redis.NewClient(ropts)
	defer rc.Close()
	if err := rc.Ping(ctx).Err(); err != nil {
		return "", fmt.Errorf("redis at %s does not answer (%w); start one with scripts/services.sh", o.RedisURL, err)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	prefix := "graft:demo:" + hex.EncodeToString(suffix[:])
	defer func() { err = errors.Join(err, deleteKeys(context.Background(), rc, prefix)) }()

	// ---- the legacy world and the registry
	leg := &legacy{db: db, schema: legacySchema, graft: o.Schema}
	if err := leg.create(ctx); err != nil {
		return "", err
	}
	legacyAPI, stopAPI, err := leg.serveAPI()
	if err != nil {
		return "", err
	}
	defer stopAPI()
	reg, err := startRegistry(50, 500, 0.03)
	if err != nil {
		return "", err
	}
	defer reg.close()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

	// ---- graft: the registry's limits across every process, in Redis
	limiter, err := ratelimit.NewRedisLimiter(rc, ratelimit.RedisConfig{
		// 50 in flight; starts kept under 500 in any calendar second (a
		// GCRA grants at most Burst + Rate - 1 in one).
		Limits: ratelimit.StaticLimits(ratelimit.Limits{Concurrency: 50, Rate: 450, Burst: 5}),
		Prefix: prefix,
		// A fresh prefix: no lease can have been lost, nothing to wait for.
		RecoveryWindow: -1,
	})
	if err != nil {
		return "", err
	}
	defer limiter.Close()
	var snoozed atomic.Int64
	var snoozeWhy sync.Map
	limit, err := ratelimit.NewActivityInterceptor(ratelimit.InterceptorConfig{
		Limiter: limiter,
		Key: func(in *engine.ActivityInput) (string, bool) {
			return registryKey, strings.HasPrefix(in.Info.ActivityName, "registry.")
		},
		// Wait in the worker for a slot rather than give the attempt back:
		// the whole burst is this one process's, and its activity slots
		// are enough for every waiter.
		MaxWait: 20 * time.Second, MaxWaiters: 200,
		OnSnooze: func(_ context.Context, _ *engine.ActivityInput, err *engine.SnoozeError) {
			snoozed.Add(1)
			why := "other"
			var denied *ratelimit.DeniedError
			if errors.As(err, &denied) {
				why = string(denied.Reason)
			} else if err.Err != nil {
				why = err.Err.Error()
			}
			snoozeWhy.Store(why, true)
		},
	})
	if err != nil {
		return "", err
	}

	// ---- graft: the renewal workflow, refunds, the legacy mirror
	rn := &renewals{db: db, payments: paymentsTable(legacySchema), registry: reg.url, hc: hc}
	_, undo, defs := rn.definitions()
	refunds, err := cancel.New(cancel.Config{Compensations: undo})
	if err != nil {
		return "", err
	}
	mirror, err := graftsync.New(ctx, graftsync.Config{Mapping: mapping(legacySchema + ".operations"), DB: db, Schema: o.Schema, Logger: logger})
	if err != nil {
		return "", err
	}
	defer mirror.Close()

	// The chain, outermost first: tracing, metrics, logging, the rate
	// limit, compensations, the mirror, panic recovery.
	spans := &spanCounter{}
	reader := sdkmetric.NewManualReader()
	chain, err := interceptors.All(interceptors.Config{Logger: logger,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))},
		limit, refunds, mirror)
	if err != nil {
		return "", err
	}
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger,
		Interceptors: chain, UnloadAfter: 300 * time.Millisecond})
	if err != nil {
		return "", err
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		return "", err
	}
	if err := e.Register(defs...); err != nil {
		return "", err
	}
	if err := refunds.Register(e); err != nil {
		return "", err
	}
	if err := mirror.Start(ctx, e.Client()); err != nil {
		return "", err
	}
	w, err := e.NewWorker(engine.WorkerConfig{MaxActivities: 200})
	if err != nil {
		return "", err
	}
	if err := w.Start(ctx); err != nil {
		return "", err
	}
	defer func() { _ = w.Stop(context.Background()) }() // at exit; a run it could not hand back resumes elsewhere

	// ---- graft: intake behind flags
	if err := tasks.Migrate(ctx, db, o.Schema); err != nil {
		return "", err
	}
	intake, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: o.DatabaseURL, Source: source(legacySchema + ".operations"),
		PollInterval: 200 * time.Millisecond, Logger: logger})
	if err != nil {
		return "", err
	}
	defer intake.Close()
	flags, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger})
	if err != nil {
		return "", err
	}
	defer flags.Close()
	fl, err := flags.Set(ctx, tasks.Change{Actor: "demo", Reason: "renewals of .info move to graft; .fr half way",
		Flag: tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}}})
	if err != nil {
		return "", err
	}

	p("graft demo: %d domain renewals on the 1st of the month", o.N)
	p("  legacy world  schema %s: operations table, read API on %s, job runner (%d workers, %v a renewal)", legacySchema, legacyAPI, o.LegacyWorkers, o.LegacyDelay)
	p("  registry      %s: 50 calls in flight and 500/s, 429 beyond; 3%% of calls fail transiently", reg.url)
	p("  flags         renew: .info 100%%, .fr 50%%, every other TLD legacy (flag version %d)", fl.Version)
	p("  interceptors  tracing, metrics, logging -> rate limit (Redis) -> refunds -> legacy mirror -> recovery")

	// ---- the 1st of the month
	// Intake and the legacy runner work until every renewal is closed.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	intakeDone := make(chan error, 1)
	go func() { intakeDone <- intake.Run(workCtx) }()
	legacyRunner := &runner{l: leg, workers: o.LegacyWorkers, delay: o.LegacyDelay, limiter: limiter, reg: reg.url, hc: hc}
	legacyWG := legacyRunner.run(workCtx)
	defer legacyWG.Wait()
	defer stopWork()
	start := time.Now()
	if err := leg.burst(ctx, o.N, premiumDomains); err != nil {
		return "", err
	}
	p("burst: %d renewals inserted into %s.operations", o.N, legacySchema)
	bar := startProgress(workCtx, o.Progress, leg, o.N)

	// The premium renewals wait for their customers: seen through the
	// legacy API, as a customer would see them.
	wctx, cancelWait := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelWait()
	ids := premiumIDs()
	for _, id := range ids {
		if err := waitFor(wctx, func() (bool, error) {
			op, err := getOperation(hc, legacyAPI, id)
			return err == nil && op.Status == "waiting", nil
		}); err != nil {
			return "", fmt.Errorf("%s never waited for its customer: %w", id, err)
		}
	}
	c := e.Client()
	if err := c.Signal(ctx, ids[0], "confirm", true); err != nil {
		return "", err
	}
	for _, id := range ids[1:] {
		if err := c.Cancel(ctx, id, "the customer changed their mind"); err != nil {
			return "", err
		}
	}
	bar.note(fmt.Sprintf("%s confirmed by its customer (signal); %d premium renewals cancelled", premiumDomains[0], len(ids)-1))

	if err := waitFor(wctx, func() (bool, error) {
		var open int
		err := db.GetContext(wctx, &open, `SELECT count(*) FROM `+leg.table()+` WHERE status NOT IN ('done', 'cancelled', 'failed')`)
		return err == nil && open == 0, err
	}); err != nil {
		return "", fmt.Errorf("renewals still open: %w", err)
	}
	elapsed := time.Since(start)
	bar.stop()
	stopWork()
	legacyWG.Wait()
	if err := <-intakeDone; err != nil && !errors.Is(err, context.Canceled) {
		return "", err
	}
	for _, n := range bar.notes() {
		p("  %s", n)
	}
	p("all %d renewals closed in %.1fs", o.N, elapsed.Seconds())

	// ---- the summary
	s, err := summarize(ctx, c, leg, hc, legacyAPI)
	if err != nil {
		return "", err
	}
	rs := reg.stats()
	sums, err := counters(ctx, reader)
	if err != nil {
		return "", err
	}
	p("summary")
	p("  operations        %d: graft %d (.info %d, .fr %d), legacy %d (.fr %d, other %d)", s.ops, s.graft, s.graftBy["info"], s.graftBy["fr"], s.legacy, s.legacyBy["fr"], s.legacy-s.legacyBy["fr"])
	p("  outcome           completed %d, cancelled %d, refunded %d, failed %d", s.completed, s.cancelled, s.refunds, s.failed)
	p("  renewal time p50  legacy %.1fs, graft %.1fs (from insert to done, queueing included)", s.p50Legacy.Seconds(), s.p50Graft.Seconds())
	p("  registry          %d calls, at most %d in flight and %d started in a second, %d failed transiently and were retried; %d renewed twice; violations %d",
		rs.Calls, rs.MaxInFlight, rs.MaxPerSecond, rs.Transient, rs.RenewedTwice, rs.Violations)
	var whys []string
	snoozeWhy.Range(func(k, _ any) bool { whys = append(whys, k.(string)); return true })
	sort.Strings(whys)
	why := ""
	if len(whys) > 0 {
		why = " (" + strings.Join(whys, "; ") + ")"
	}
	p("  interceptors      %d spans; activities completed %d, retried %d, snoozed by the rate limit %d%s",
		spans.n.Load(), sums[interceptors.MetricActivityCompleted], sums[interceptors.MetricActivityRetried], snoozed.Load(), why)
	p("  legacy API        %d operations read back; %d disagree with the engine", s.ops, s.mismatches)
	for _, m := range s.mismatchList {
		p("    mismatch: %s", m)
	}

	if o.Serve != "" {
		p("%s", fmt.Sprintf("demo ops=%d graft=%d legacy=%d completed=%d cancelled=%d refunds=%d violations=%d mismatches=%d",
			s.ops, s.graft, s.legacy, s.completed, s.cancelled, s.refunds, rs.Violations, s.mismatches))
		if err := serve(ctx, o.Serve, e, flags, rc, prefix, intake, p, o.onServe); err != nil {
			return "", err
		}
	}
	if o.Keep {
		p("kept: schemas %s and %s, Redis keys %s*", o.Schema, legacySchema, prefix)
	} else {
		p("cleaned up: schemas %s and %s and Redis keys %s* are removed", o.Schema, legacySchema, prefix)
	}
	return fmt.Sprintf("demo ops=%d graft=%d legacy=%d completed=%d cancelled=%d refunds=%d violations=%d mismatches=%d",
		s.ops, s.graft, s.legacy, s.completed, s.cancelled, s.refunds, rs.Violations, s.mismatches), nil
}

// premiumIDs are the operation IDs of premiumDomains (the burst gives them
// the first IDs).
func premiumIDs() []string {
	ids := make([]string, len(premiumDomains))
	for i := range ids {
		ids[i] = fmt.Sprintf("op-%06d", i+1)
	}
	return ids
}

// source declares the legacy table to intake: the operation ID is the
// workflow ID, the routing key is the domain's TLD.
func source(table string) *tasks.Source {
	return &tasks.Source{Name: "operations", Table: table, ID: "id", Kind: "kind",
		Kinds:    map[string]tasks.KindSpec{"renew": {Workflow: "renewal"}},
		Key:      tasks.KeySpec{Column: "domain", Transform: tasks.TransformTLD},
		Status:   tasks.StatusSpec{Column: "status", Pending: "pending", Graft: "queued", Legacy: "running"},
		Customer: "customer", Error: "last_error", CreatedAt: "created_at",
		Input:  map[string]string{"Domain": "domain", "Customer": "customer"},
		Notify: strings.TrimSuffix(table, ".operations") + "_operations"}
}

// mapping mirrors a renewal's state into its legacy row, in the legacy
// vocabulary the read API already shows.
func mapping(table string) graftsync.Mapping {
	return graftsync.Mapping{
		Table:     table,
		Workflows: []string{"renewal"},
		Key:       graftsync.Key{Column: "id"},
		// No value for StatePending: intake marks a claimed row "queued"
		// itself, in the transaction that starts its workflow.
		Status: &graftsync.StatusColumn{Column: "status", Values: map[graftsync.State]string{
			graftsync.StateRunning: "running", graftsync.StateWaiting: "waiting",
			graftsync.StateCompleted: "done", graftsync.StateFailed: "failed", graftsync.StateCancelled: "cancelled",
			graftsync.StateNeedsOperator: "needs_operator"}},
		Step: &graftsync.StepColumn{Column: "step", Labels: map[string]string{
			"registry.check": "checked", "registry.premium": "priced", "billing.charge": "charged",
			"registry.renew": "renewed", "customer.notify": "notified", "billing.refund": "refunded"}},
		Error:     &graftsync.ErrorColumn{Column: "last_error"},
		Attempts:  "attempts",
		UpdatedAt: "updated_at",
		Version:   "version",
	}
}

// summary is what the demo reports, read back from the legacy table, its
// API and the engine.
type summary struct {
	ops, graft, legacy, completed, cancelled, failed, refunds, mismatches int
	graftBy, legacyBy                                                     map[string]int
	p50Graft, p50Legacy                                                   time.Duration
	mismatchList                                                          []string
}

// legacyStatus is the legacy word for an engine run status at its end.
var legacyStatus = map[engine.Status]string{engine.StatusCompleted: "done", engine.StatusCancelled: "cancelled", engine.StatusFailed: "failed"}

func summarize(ctx context.Context, c *engine.Client, leg *legacy, hc *http.Client, api string) (summary, error) {
	s := summary{graftBy: map[string]int{}, legacyBy: map[string]int{}}
	var rows []struct {
		ID       string        `db:"id"`
		Domain   string        `db:"domain"`
		Status   string        `db:"status"`
		Runner   *string       `db:"runner"`
		Duration time.Duration `db:"duration"`
	}
	if err := leg.db.SelectContext(ctx, &rows, `SELECT id, domain, status, runner,
		(extract(epoch FROM updated_at - created_at) * 1e9)::bigint AS duration FROM `+leg.table()+` ORDER BY id`); err != nil {
		return s, err
	}
	// Each operation as its customer sees it, and as the engine does:
	// read in parallel, then tallied in order.
	type view struct {
		op   operation
		info *engine.RunInfo // nil: the engine never heard of it
		err  error
	}
	views := make([]view, len(rows))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(rows); i = int(next.Add(1)) - 1 {
				v := &views[i]
				if v.op, v.err = getOperation(hc, api, rows[i].ID); v.err != nil {
					continue
				}
				if v.info, v.err = c.Describe(ctx, rows[i].ID); errors.Is(v.err, engine.ErrNotFound) {
					v.info, v.err = nil, nil
				}
			}
		})
	}
	wg.Wait()
	var graftTimes, legacyTimes []time.Duration
	for i, r := range rows {
		op, info := views[i].op, views[i].info
		if err := views[i].err; err != nil {
			return s, err
		}
		s.ops++
		tld := r.Domain[strings.LastIndexByte(r.Domain, '.')+1:]
		switch info {
		case nil:
			s.legacy++
			s.legacyBy[tld]++
			if r.Runner == nil || op.Status != "done" {
				s.mismatchList = append(s.mismatchList, fmt.Sprintf("%s (legacy): the API says %q", r.ID, op.Status))
			}
			if r.Status == "done" {
				legacyTimes = append(legacyTimes, r.Duration)
			}
		default:
			s.graft++
			s.graftBy[tld]++
			if want := legacyStatus[info.Status]; op.Status != want || r.Runner != nil {
				s.mismatchList = append(s.mismatchList, fmt.Sprintf("%s (graft): the engine says %s, the API %q", r.ID, info.Status, op.Status))
			}
			if r.Status == "done" {
				graftTimes = append(graftTimes, r.Duration)
			}
		}
		switch op.Status {
		case "done":
			s.completed++
		case "cancelled":
			s.cancelled++
		default:
			s.failed++
		}
	}
	s.mismatches = len(s.mismatchList)
	s.p50Graft, s.p50Legacy = median(graftTimes), median(legacyTimes)
	err := leg.db.GetContext(ctx, &s.refunds, `SELECT count(*) FROM `+pq.QuoteIdentifier(leg.schema)+`.payments WHERE refunded_at IS NOT NULL`)
	return s, err
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// waitFor polls cond every 50ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// spanCounter counts the spans the tracing interceptor ends.
type spanCounter struct{ n atomic.Int64 }

func (s *spanCounter) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (s *spanCounter) OnEnd(sdktrace.ReadOnlySpan)                     { s.n.Add(1) }
func (s *spanCounter) Shutdown(context.Context) error                  { return nil }
func (s *spanCounter) ForceFlush(context.Context) error                { return nil }

// counters sums the metric reader's int64 counters over their attributes.
func counters(ctx context.Context, reader *sdkmetric.ManualReader) (map[string]int64, error) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					out[m.Name] += dp.Value
				}
			}
		}
	}
	return out, nil
}

// deleteKeys removes the demo's Redis keys.
func deleteKeys(ctx context.Context, rc *redis.Client, prefix string) error {
	iter := rc.Scan(ctx, 0, "{"+prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		if err := rc.Del(ctx, iter.Val()).Err(); err != nil {
			return err
		}
	}
	return iter.Err()
}
