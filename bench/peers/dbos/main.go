// Command dbos-bench runs graft's basic benchmark shape on DBOS Transact Go,
// for a comparison taken in the same sequence as `graft bench`: a workflow
// of three no-op steps, each workflow started and awaited from one of -c
// goroutines, n workflows in all. It prints one line in graft's format
// (p50 and p99 of start-to-result, and the process's CPU per workflow).
//
// It lives in its own module so DBOS and its dependencies stay out of
// graft's go.mod. It creates the database it is given in -db (dropping it
// first if it exists) on the server of -admin, and drops it at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"
)

func main() {
	n := flag.Int("n", 300, "workflows to run")
	c := flag.Int("c", 1, "workflows in flight")
	admin := flag.String("admin", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"a database URL on the server, used to create and drop -db")
	dbName := flag.String("db", "graft_peer_dbos", "the database DBOS uses (created, then dropped)")
	keep := flag.Bool("keep", false, "keep the database afterwards")
	flag.Parse()
	if err := run(*n, *c, *admin, *dbName, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "dbos-bench:", err)
		os.Exit(1)
	}
}

func run(n, c int, admin, dbName string, keep bool) error {
	if n < 1 || c < 1 {
		return fmt.Errorf("-n and -c must be at least 1 (got %d and %d)", n, c)
	}
	ctx := context.Background()
	if err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return err
	}
	if err := adminExec(ctx, admin, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return err
	}
	if !keep {
		defer func() {
			if err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
				fmt.Fprintln(os.Stderr, "dbos-bench: drop database:", err)
			}
		}()
	}
	u, err := url.Parse(admin)
	if err != nil {
		return fmt.Errorf("-admin: %w", err)
	}
	u.Path = "/" + dbName

	dctx, err := dbos.NewContext(ctx, dbos.Config{
		AppName:     "graft-peer-bench",
		DatabaseURL: u.String(),
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return err
	}
	noop := func(in int) dbos.Step[int] {
		return func(context.Context) (int, error) { return in + 1, nil }
	}
	three := func(wctx dbos.Context, in int) (int, error) {
		v := in
		for range 3 {
			var err error
			if v, err = dbos.RunAsStep(wctx, noop(v), dbos.WithStepName("bench.noop")); err != nil {
				return v, err
			}
		}
		return v, nil
	}
	dbos.RegisterWorkflow(dctx, three, dbos.WithWorkflowName("bench.three"))
	if err := dbos.Launch(dctx); err != nil {
		return err
	}
	defer dbos.Shutdown(dctx, 5*time.Second)

	lat := make([]time.Duration, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), processCPU()
	for range c {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				err := func() error {
					h, err := dbos.RunWorkflow(dctx, three, 0, dbos.WithWorkflowID(fmt.Sprintf("bench-%d", i)))
					if err != nil {
						return err
					}
					out, err := h.GetResult()
					if err == nil && out != 3 {
						err = fmt.Errorf("workflow %d returned %d, want 3", i, out)
					}
					return err
				}()
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	if failed.Load() > 0 {
		return fmt.Errorf("%d workflows failed; first: %v", failed.Load(), firstErr.Load())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	at := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("peer=dbos workflows=%d concurrency=%d elapsed_s=%.2f throughput_wf_s=%.0f p50_ms=%.2f p99_ms=%.2f go_cpu_us_per_wf=%.0f\n",
		n, c, elapsed.Seconds(), float64(n)/elapsed.Seconds(), ms(at(0.50)), ms(at(0.99)), float64(cpu.Microseconds())/float64(n))
	return nil
}

func adminExec(ctx context.Context, admin, sql string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to -admin: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
