package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
)

// sleepIn is a sleeper's input: how long to sleep.
type sleepIn struct{ D time.Duration }

// benchSleepers starts n workflows that each sleep, measures the process's
// resident memory while they all wait (unloaded, they should cost rows, not
// RAM), then waits until every one has woken and completed.
//
// Starting n runs takes a while, so each sleeper's duration is chosen to end
// o.sleep after the projected end of the start phase (projected from the
// start rate so far, with a margin): all of them are asleep together when
// the memory is measured.
func benchSleepers(o benchOpts) error {
	wf := engine.NewWorkflow("bench.sleeper", func(ctx engine.Context, in sleepIn) (int, error) {
		if err := engine.Sleep(ctx, in.D); err != nil {
			return 0, err
		}
		return 1, nil
	})
	// Any sleep longer than UnloadAfter unloads at once.
	cfg := engine.Config{UnloadAfter: 200 * time.Millisecond, Retention: -1}
	env, err := newBenchEnv(o, cfg, engine.WorkerConfig{MaxWorkflows: 2000, ClaimBatch: 500}, wf)
	if err != nil {
		return err
	}
	defer env.cleanup()
	c := env.e.Client()
	runs := pq.QuoteIdentifier(o.schema) + ".runs"
	db := env.e.DB()
	count := func(status engine.Status) (int, error) {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM `+runs+` WHERE status = $1`, status).Scan(&n)
		return n, err
	}

	rssBefore := settledRSS()

	var started atomic.Int64
	t0 := time.Now()
	// projectedEnd estimates when the last start will be done.
	projectedEnd := func() time.Time {
		s := started.Load()
		el := time.Since(t0)
		if s < 1000 {
			// Until the rate is known, assume 1000 starts a second.
			return t0.Add(time.Duration(o.n) * time.Millisecond)
		}
		total := time.Duration(float64(el) * float64(o.n) / float64(s) * 1.5)
		return t0.Add(total)
	}
	failed, firstErr := fanOut(o.n, o.c, func(ctx context.Context, i int) error {
		defer started.Add(1)
		wake := projectedEnd().Add(o.sleep)
		if min := time.Now().Add(o.sleep); wake.Before(min) {
			wake = min
		}
		_, err := wf.Start(ctx, c, sleepIn{D: time.Until(wake)}, &engine.StartOptions{ID: fmt.Sprintf("sleeper-%d", i)})
		return err
	})
	startElapsed := time.Since(t0)
	if failed > 0 {
		return fmt.Errorf("bench: %d starts failed; first: %v", failed, firstErr)
	}

	// Wait until every started run has reached its sleep and been unloaded.
	for {
		waiting, err := count(engine.StatusWaiting)
		if err != nil {
			return err
		}
		done, err := count(engine.StatusCompleted)
		if err != nil {
			return err
		}
		if waiting+done >= o.n {
			fmt.Printf("start phase: %d runs in %.1fs (%.0f/s); %d asleep, %d already woke\n",
				o.n, startElapsed.Seconds(), float64(o.n)/startElapsed.Seconds(), waiting, done)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rssAsleep := settledRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rss_before_mb=%.1f rss_asleep_mb=%.1f heap_inuse_mb=%.1f goroutines=%d\n",
		mb(rssBefore), mb(rssAsleep), mb(int64(ms.HeapInuse)), runtime.NumGoroutine())

	// Let them wake and finish.
	tWake := time.Now()
	deadline := time.Now().Add(o.sleep + startElapsed + 10*time.Minute)
	resumed := 0
	var firstWake time.Time
	for time.Now().Before(deadline) {
		if resumed, err = count(engine.StatusCompleted); err != nil {
			return err
		}
		if resumed > 0 && firstWake.IsZero() {
			firstWake = time.Now()
		}
		if resumed >= o.n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	wakeSpan := time.Since(firstWake)
	fmt.Printf("wake phase: first completion %.1fs after the start phase; %d completed within %.1fs of it (%.0f/s); total %.1fs\n",
		firstWake.Sub(tWake).Seconds(), resumed, wakeSpan.Seconds(), float64(resumed)/wakeSpan.Seconds(), time.Since(t0).Seconds())
	growth := mb(rssAsleep - rssBefore)
	if growth < 0 {
		growth = 0
	}
	fmt.Printf("sleepers=%d rss_growth_mb=%.1f resumed=%d start_per_s=%.0f wake_per_s=%.0f\n", o.n, growth, resumed,
		float64(o.n)/startElapsed.Seconds(), float64(resumed)/wakeSpan.Seconds())
	if resumed < o.n {
		return fmt.Errorf("bench: only %d of %d sleepers resumed before the deadline", resumed, o.n)
	}
	return nil
}

// settledRSS collects garbage and returns the resident set size in bytes.
func settledRSS() int64 {
	runtime.GC()
	runtime.GC()
	return readRSS()
}

// readRSS reads VmRSS from /proc/self/status (Linux); 0 elsewhere.
func readRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "VmRSS:"))
		if len(fields) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
