package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/cpustat"
)

type benchOpts struct {
	n, c     int
	scenario string
	with     map[string]bool
	sleep    time.Duration
	keep     bool
	shards   int
	schema   string
	// provider scenario
	limitConc int
	limitRate float64
	// chaos scenario
	workers int
	faults  bool
	// stats adds a line of per-workflow figures (see benchStats).
	stats    bool
	counters *dbCounters
	// idle, when set, measures the CPU the process uses while its worker has
	// nothing to do, for this long after the workflows finish.
	idle time.Duration
	// noWorker: the benchmark's process runs no worker (-workers runs them
	// in worker processes).
	noWorker bool
	// cpuprofile is -cpuprofile's file; -workers' processes write theirs
	// beside it.
	cpuprofile string
	// reuse is -reuse: the schema of an earlier -keep run to measure again.
	reuse string
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	o := benchOpts{}
	fs.IntVar(&o.n, "n", 2000, "workflows to run")
	fs.IntVar(&o.c, "c", 64, "concurrent starters (each starts a workflow and waits for its result)")
	fs.StringVar(&o.scenario, "scenario", "basic", "basic (3 no-op activities) | children (a child workflow of 1 no-op activity) | sleepers | provider | redis-ops | chaos | intake | api | roundtrips (the floor: 4 sequential INSERT round trips per iteration on one lib/pq connection, -n default 3000)")
	with := fs.String("with", "", "comma-separated extras: interceptors, mirror")
	fs.DurationVar(&o.sleep, "sleep", 5*time.Second, "sleepers: how long each workflow sleeps")
	fs.BoolVar(&o.keep, "keep", false, "keep the benchmark schema afterwards")
	fs.StringVar(&o.reuse, "reuse", "", "api: measure again in this schema, kept (-keep) by an earlier run with the same -n, without seeding it again; it is kept again")
	fs.IntVar(&o.limitConc, "limit-concurrency", 50, "provider, chaos: calls in flight allowed (chaos default 16)")
	fs.Float64Var(&o.limitRate, "limit-rate", 500, "provider, chaos: calls per second allowed (chaos default 300)")
	fs.IntVar(&o.workers, "workers", 3, "chaos: worker processes (default 3); basic: run the workers in this many processes instead of in the benchmark's, each with GOMAXPROCS cores/N unless it is set (default 0: in-process)")
	fs.BoolVar(&o.faults, "faults", true, "chaos: inject faults (kills, restarts, terminated backends); false runs the same load without")
	fs.IntVar(&o.shards, "shards", 0, "group-commit writers per process (0: engine default; with -workers, of each worker process)")
	fs.BoolVar(&o.stats, "stats", false, "basic, children: also print round trips, commits, WAL bytes, rows and allocations per workflow (WAL needs pg_walinspect in the database), and each statement's executions per workflow; with -workers, the worker processes' pools count in")
	fs.DurationVar(&o.idle, "idle", 0, "basic: afterwards, measure the process's CPU use while idle for this long (idle_cpu_pct)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile here (basic with -workers: each worker process writes its own to this name plus .workerN)")
	cpuprofile := &o.cpuprofile
	memprofile := fs.String("memprofile", "", "write an allocation profile here at the end")
	traceFile := fs.String("trace", "", "write an execution trace (runtime/trace) of the whole run here")
	_ = fs.Parse(args)
	// Scenario defaults apply to the flags not given.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch o.scenario {
	case "basic", "children":
		if !set["workers"] {
			o.workers = 0
		}
	case "roundtrips":
		if !set["n"] {
			o.n = roundTripsDefaultN
		}
	case "chaos":
		// Limits that bind under the chaos load.
		if !set["limit-concurrency"] {
			o.limitConc = chaosDefaultConcurrency
		}
		if !set["limit-rate"] {
			o.limitRate = chaosDefaultRate
		}
	}
	if *memprofile != "" {
		defer func() {
			if f, err := os.Create(*memprofile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	o.with = map[string]bool{}
	for _, w := range strings.Split(*with, ",") {
		if w = strings.TrimSpace(w); w != "" {
			o.with[w] = true
		}
	}
	if o.n <= 0 || o.c <= 0 {
		return fmt.Errorf("bench: -n and -c must be positive")
	}
	if o.stats {
		o.counters = &dbCounters{}
	}
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	o.schema = "graft_bench_" + hex.EncodeToString(buf)
	if o.reuse != "" {
		if o.scenario != "api" {
			return fmt.Errorf("bench: -reuse is for -scenario api")
		}
		o.schema, o.keep = o.reuse, true
	}
	switch o.scenario {
	case "basic", "children":
		return benchBasic(o)
	case "sleepers":
		return benchSleepers(o)
	case "provider":
		return benchProvider(o)
	case "redis-ops":
		return benchRedisOps(o)
	case "intake":
		return benchIntake(o)
	case "api":
		return benchAPI(o)
	case "chaos":
		return benchChaos(o)
	case "roundtrips":
		return benchRoundTrips(os.Stdout, o)
	case "basic-worker":
		// A worker process of the basic scenario with -workers, started by it.
		return benchBasicWorker()
	case "chaos-worker":
		// A worker process of the chaos scenario, started by it.
		return benchChaosWorker()
	default:
		return fmt.Errorf("bench: unknown -scenario %q", o.scenario)
	}
}

// benchEnv is an engine in a throwaway schema with one worker.
type benchEnv struct {
	e *engine.Engine
	w *engine.Worker
	// close stops the worker and the engine and closes the pool; cleanup
	// does that (once) and drops the schema.
	close   func()
	cleanup func()
}

func newBenchEnv(o benchOpts, cfg engine.Config, wcfg engine.WorkerConfig, defs ...engine.Definition) (*benchEnv, error) {
	db, err := openBenchDB(o, 40)
	if err != nil {
		return nil, err
	}
	cfg.DB, cfg.DatabaseURL, cfg.Schema = db, databaseURL(), o.schema
	cfg.CommitShards = o.shards
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.Migrate(context.Background()); err != nil {
		return nil, err
	}
	if err := e.Register(defs...); err != nil {
		return nil, err
	}
	var w *engine.Worker
	if !o.noWorker {
		if w, err = e.NewWorker(wcfg); err != nil {
			return nil, err
		}
		if err := w.Start(context.Background()); err != nil {
			return nil, err
		}
	}
	closeEnv := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if w != nil {
			_ = w.Stop(ctx)
		}
		_ = e.Close()
		db.Close()
	})
	return &benchEnv{e: e, w: w, close: closeEnv, cleanup: func() {
		closeEnv()
		if !o.keep {
			if db, err := openDB(1); err == nil {
				_, _ = db.Exec(`DROP SCHEMA IF EXISTS ` + pq.QuoteIdentifier(o.schema) + ` CASCADE`)
				db.Close()
			}
		}
	}}, nil
}

type noop struct{ N int }

// basicDefs are the basic scenario's definitions: a workflow of three no-op
// activities in a row.
func basicDefs() (*engine.Activity[noop, noop], *engine.Workflow[noop, noop]) {
	act := engine.NewActivity("bench.noop", func(ctx context.Context, in noop) (noop, error) { return noop{N: in.N + 1}, nil })
	wf := engine.NewWorkflow("bench.three", func(ctx engine.Context, in noop) (noop, error) {
		v := in
		for i := 0; i < 3; i++ {
			var err error
			if v, err = act.Run(ctx, v); err != nil {
				return v, err
			}
		}
		return v, nil
	})
	return act, wf
}

// childrenDefs are the children scenario's definitions: a workflow that
// starts one child workflow, which runs one no-op activity, and awaits it.
// Each child's end wakes its parent, so the commits that close children
// take committer.lockTree's statement.
func childrenDefs() []engine.Definition {
	act := engine.NewActivity("bench.noop", func(ctx context.Context, in noop) (noop, error) { return noop{N: in.N + 1}, nil })
	child := engine.NewWorkflow("bench.child", func(ctx engine.Context, in noop) (noop, error) { return act.Run(ctx, in) })
	parent := engine.NewWorkflow("bench.parent", func(ctx engine.Context, in noop) (noop, error) { return child.RunChild(ctx, in, nil) })
	return []engine.Definition{act, child, parent}
}

func benchBasic(o benchOpts) error {
	act, wf := basicDefs()
	defs, want := []engine.Definition{act, wf}, 3
	if o.scenario == "children" {
		if o.workers > 0 {
			return fmt.Errorf("bench: -workers runs the basic scenario only")
		}
		defs, want = childrenDefs(), 1
		wf = defs[2].(*engine.Workflow[noop, noop])
	}
	if o.workers > 0 {
		if len(o.with) > 0 {
			return fmt.Errorf("bench: -workers runs the basic scenario without -with")
		}
		o.noWorker = true
	}
	cfg := engine.Config{}
	extras, err := setupExtras(o, &cfg)
	if err != nil {
		return err
	}
	env, err := newBenchEnv(o, cfg, engine.WorkerConfig{MaxWorkflows: max(1000, 2*o.c), MaxActivities: max(500, 2*o.c)}, defs...)
	if err != nil {
		return err
	}
	defer env.cleanup()
	if err := extras.prepare(context.Background(), env); err != nil {
		return err
	}
	c := env.e.Client()
	var procs *workerProcs
	if o.workers > 0 {
		if procs, err = startWorkerProcs(o); err != nil {
			return err
		}
		defer procs.stop()
	}
	var st *benchStats
	if o.stats {
		st = &benchStats{c: o.counters, schema: o.schema}
		if err := st.begin(context.Background(), env.e.DB()); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, o.n)
	start, cpu0 := time.Now(), cpustat.Process()
	failed, firstErr := fanOut(o.n, o.c, func(ctx context.Context, i int) error {
		t0 := time.Now()
		defer func() { lat[i] = time.Since(t0) }()
		run, err := wf.Start(ctx, c, noop{}, &engine.StartOptions{ID: fmt.Sprintf("bench-%d", i), Headers: extras.headers(i)})
		if err != nil {
			return err
		}
		out, err := run.Result(ctx)
		if err == nil && out.N != want {
			err = fmt.Errorf("workflow %d returned %d, want %d", i, out.N, want)
		}
		return err
	})
	elapsed, cpu := time.Since(start), cpustat.Process()-cpu0
	if failed > 0 {
		return fmt.Errorf("bench: %d workflows failed; first: %v", failed, firstErr)
	}
	var procStats statsAtEnd
	if procs != nil {
		// The worker processes' CPU counts once they have exited.
		procs.stop()
		cpu += cpustat.Children() - procs.cpu0
		if st != nil {
			if procStats, err = procs.stats(); err != nil {
				return err
			}
		}
	}
	tail, err := extras.verify(context.Background(), env, o.n)
	if err != nil {
		return err
	}
	if procs != nil {
		tail += fmt.Sprintf(" workers=%d", o.workers)
	}
	p50, p99 := percentiles(lat)
	fmt.Printf("workflows=%d concurrency=%d elapsed_s=%.2f throughput_wf_s=%.0f p50_ms=%.2f p99_ms=%.2f go_cpu_us_per_wf=%.0f%s\n",
		o.n, o.c, elapsed.Seconds(), float64(o.n)/elapsed.Seconds(), ms(p50), ms(p99), float64(cpu.Microseconds())/float64(o.n), tail)
	if o.idle > 0 {
		c0, t0 := cpustat.Process(), time.Now()
		time.Sleep(o.idle)
		fmt.Printf("idle_s=%.1f idle_cpu_pct=%.2f\n", time.Since(t0).Seconds(), 100*float64(cpustat.Process()-c0)/float64(time.Since(t0)))
	}
	if st != nil {
		end := st.end()
		if procs != nil {
			end.add(procStats)
		}
		env.close()
		line, err := st.report(context.Background(), end, o.n)
		if err != nil {
			return err
		}
		fmt.Println(line)
		for _, l := range end.statementsLines(o.n) {
			fmt.Println(l)
		}
	}
	return nil
}

// fanOut calls each for i in [0, n) from c goroutines and returns how many
// calls failed and the first error.
func fanOut(n, c int, each func(ctx context.Context, i int) error) (int64, error) {
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			ctx := context.Background()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := each(ctx, i); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	return failed.Load(), err
}

func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return at(0.50), at(0.99)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
