package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/graftdev/graft/engine"
)

// The basic scenario with -workers runs its workers in processes of their
// own (this binary re-run as `graft bench -scenario basic-worker`), all
// against one PostgreSQL, while the benchmark's process only starts the
// workflows and waits for their results.
const (
	basicEnvSchema       = "GRAFT_BENCH_SCHEMA"
	basicEnvMaxWorkflows = "GRAFT_BENCH_MAX_WORKFLOWS"
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
	p := &workerProcs{cpu0: childrenCPU()}
	env := []string{basicEnvSchema + "=" + o.schema, basicEnvMaxWorkflows + "=" + strconv.Itoa(max(1000, 2*o.c))}
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
	db, err := openDB(40)
	if err != nil {
		return err
	}
	defer db.Close()
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema,
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
	return e.Close()
}
