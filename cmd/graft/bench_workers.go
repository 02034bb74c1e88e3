package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/cpustat"
)

// The basic scenario with -workers runs its workers in processes of their
// own (this binary re-run as `graft bench -scenario basic-worker`), all
// against one PostgreSQL, while the benchmark's process only starts the
// workflows and waits for their results.
const (
	basicEnvSchema       = "GRAFT_BENCH_SCHEMA"
	basicEnvMaxWorkflows = "GRAFT_BENCH_MAX_WORKFLOWS"
	// basicEnvStats, when set, makes a worker process count what its
	// pool sends (-stats) and print it when it stops (see workerStats).
	basicEnvStats = "GRAFT_BENCH_STATS"
	// basicEnvShards is -shards, for the worker processes' engines.
	basicEnvShards = "GRAFT_BENCH_SHARDS"
)

// workerProcs are the running worker processes.
type workerProcs struct {
	procs []*chaosWorkerProc
	// cpu0 is the CPU of this process's waited-for children before them.
	cpu0     time.Duration
	stopOnce sync.Once
}

// startWorkerProcs starts o.workers worker processes on o.schema and waits
// until each is ready. Each may load enough runs for all the starters.
func startWorkerProcs(o benchOpts) (*workerProcs, error) {
	p := &workerProcs{cpu0: cpustat.Children()}
	env := workerEnv(o, runtime.NumCPU())
	for i := range o.workers {
		var args []string
		if o.cpuprofile != "" {
			// Each worker process profiles itself beside the benchmark's.
			args = []string{"-cpuprofile", fmt.Sprintf("%s.worker%d", o.cpuprofile, i+1)}
		}
		w, err := spawnWorker("basic-worker", env, os.Stderr, args...)
		if err != nil {
			p.stop()
			return nil, err
		}
		p.procs = append(p.procs, w)
	}
	for _, w := range p.procs {
		select {
		case <-w.ready:
		case <-w.done:
			p.stop()
			return nil, fmt.Errorf("bench: a worker process exited before it was ready")
		case <-time.After(time.Minute):
			p.stop()
			return nil, fmt.Errorf("bench: a worker process was not ready within a minute")
		}
	}
	return p, nil
}

// workerEnv is what a worker process is started with on a machine of cpus
// cores: its schema, its limits, and its share of the cores (GOMAXPROCS,
// at least 1). A Go runtime otherwise runs as many threads for Go code as
// the machine has cores, and N processes on those cores each look for
// work that another thread could have taken: with -n 50000 -c 512
// -workers 4 on two cores, runtime.schedule took 13% of the worker
// processes' CPU against 5% for one worker process, and with GOMAXPROCS=1
// each the processes' Go CPU per workflow fell from 304-314 µs to 266-276
// (three alternated rounds). A GOMAXPROCS set for the benchmark is left to
// its processes.
func workerEnv(o benchOpts, cpus int) []string {
	env := []string{basicEnvSchema + "=" + o.schema, basicEnvMaxWorkflows + "=" + strconv.Itoa(max(1000, 2*o.c))}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(1, cpus/max(1, o.workers))))
	}
	if o.stats {
		env = append(env, basicEnvStats+"=1")
	}
	if o.shards > 0 {
		env = append(env, basicEnvShards+"="+strconv.Itoa(o.shards))
	}
	return env
}

// stop asks every worker process to stop and waits for them.
func (p *workerProcs) stop() {
	p.stopOnce.Do(func() {
		for _, w := range p.procs {
			_ = w.stdin.Close()
		}
		for _, w := range p.procs {
			w.stop(30 * time.Second)
		}
	})
}

// benchBasicWorker is one worker process of the basic scenario: it runs the
// scenario's workflows from the schema it is given until its stdin closes.
func benchBasicWorker() error {
	ctx := context.Background()
	schema := os.Getenv(basicEnvSchema)
	if schema == "" {
		return fmt.Errorf("bench: basic-worker is started by the basic scenario with -workers (%s is not set)", basicEnvSchema)
	}
	maxWF, _ := strconv.Atoi(os.Getenv(basicEnvMaxWorkflows))
	shards, _ := strconv.Atoi(os.Getenv(basicEnvShards))
	var counters *dbCounters
	var db *sqlx.DB
	var err error
	if os.Getenv(basicEnvStats) != "" {
		counters = &dbCounters{}
		db, err = openCountingDB(40, counters)
	} else {
		db, err = openDB(40)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema, CommitShards: shards,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return err
	}
	act, wf := basicDefs()
	if err := e.Register(act, wf); err != nil {
		return err
	}
	if err := serveWorker(ctx, e, engine.WorkerConfig{MaxWorkflows: maxWF, MaxActivities: maxWF}); err != nil {
		return err
	}
	err = e.Close()
	if counters != nil {
		// Before the pool closes: its backends' CPU is read from /proc.
		printWorkerStats(counters)
	}
	return err
}

// The lines a basic worker process prints when it stops, with -stats: its
// pool's round trips, commits and backends' CPU, and its statements.
const (
	workerStatsPrefix     = "worker-stats "
	workerStatementPrefix = "worker-statement "
	// workerLabel begins the label of a worker process's statements in
	// the benchmark's statement lines.
	workerLabel = "worker: "
)

// printWorkerStats prints what a worker process's pool counted, for the
// benchmark's process to add to its own (workerStats): a statement's
// line holds its executions, its backends' CPU in ns and its label.
func printWorkerStats(c *dbCounters) {
	pg, ok := c.backendCPU()
	if !ok {
		pg = -1
	}
	fmt.Printf("%s%d %d %d\n", workerStatsPrefix, c.roundTrips.Load(), c.commits.Load(), pg.Microseconds())
	c.mu.Lock()
	defer c.mu.Unlock()
	for l, n := range c.statements {
		fmt.Printf("%s%d %d %s\n", workerStatementPrefix, n, c.stmtCPU[l], strconv.Quote(l))
	}
	for _, l := range []string{"BEGIN", "COMMIT", "ROLLBACK"} { // CPU only
		if c.stmtCPU[l] > 0 {
			fmt.Printf("%s%d %d %s\n", workerStatementPrefix, 0, c.stmtCPU[l], strconv.Quote(l))
		}
	}
}

// workerStats reads the counters the stopped worker processes printed.
func (p *workerProcs) stats() (statsAtEnd, error) {
	out := statsAtEnd{statements: map[string]int64{}, stmtCPU: map[string]int64{}}
	for _, w := range p.procs {
		var got bool
		for _, line := range w.reports {
			switch {
			case strings.HasPrefix(line, workerStatsPrefix):
				var rt, cm, pg int64
				if _, err := fmt.Sscanf(strings.TrimPrefix(line, workerStatsPrefix), "%d %d %d", &rt, &cm, &pg); err != nil {
					return out, fmt.Errorf("bench: a worker's stats line %q: %w", line, err)
				}
				o := statsAtEnd{roundTrips: rt, commits: cm}
				if pg >= 0 {
					o.pgCPU, o.pgCPUOK = time.Duration(pg)*time.Microsecond, true
				}
				out.add(o)
				got = true
			case strings.HasPrefix(line, workerStatementPrefix):
				n, rest, ok := strings.Cut(strings.TrimPrefix(line, workerStatementPrefix), " ")
				ns, q, ok2 := strings.Cut(rest, " ")
				cpu, cerr := strconv.ParseInt(ns, 10, 64)
				calls, err := strconv.ParseInt(n, 10, 64)
				label, qerr := strconv.Unquote(q)
				if !ok || !ok2 || err != nil || cerr != nil || qerr != nil {
					return out, fmt.Errorf("bench: a worker's statement line %q is malformed", line)
				}
				label = workerLabel + label
				out.statements[label] += calls
				out.stmtCPU[label] += cpu
			}
		}
		if !got {
			return out, fmt.Errorf("bench: a worker process printed no stats (it did not stop cleanly)")
		}
	}
	return out, nil
}
