package main

import (
	"bufio"
	"context"
	"database/sql"
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
// All of them sleep until one moment, wakeAll, so that the wake phase
// measures how fast due runs are woken rather than how their wake times
// are spread. Starting n runs takes a while, so that moment is set once the
// start rate is known (after the first pilot starts): o.sleep after 1.5
// times the projected start phase (the rate falls as the table grows, and
// with the machine's load). The pilot's runs sleep o.sleep only (they wake
// while the others start), as do runs started after wakeAll; when the start
// phase overran wakeAll, a line says so, since the wake rate then covers
// only the runs still asleep at the end of it.
// wake_per_s counts the runs that completed after wakeAll (or after the
// start phase, if it overran) over the time from then to the last one's
// end, read from the runs' closed_at.
func benchSleepers(o benchOpts) error {
	var woke atomic.Int64 // sleepers whose sleep ended (in this process)
	wf := engine.NewWorkflow("bench.sleeper", func(ctx engine.Context, in sleepIn) (int, error) {
		if err := engine.Sleep(ctx, in.D); err != nil {
			return 0, err
		}
		woke.Add(1)
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

	rssBefore := settledRSS()

	var started atomic.Int64
	var wakeAll atomic.Int64 // unix nanoseconds; 0 until the rate is known
	pilot := int64(min(max(o.n/50, 1000), 5000))
	t0 := time.Now()
	failed, firstErr := fanOut(o.n, o.c, func(ctx context.Context, i int) error {
		defer started.Add(1)
		wake := time.Now().Add(o.sleep)
		if w := wakeAll.Load(); w != 0 {
			if at := time.Unix(0, w); at.After(wake) {
				wake = at
			}
		} else if s := started.Load(); s >= pilot {
			el := time.Since(t0)
			at := t0.Add(time.Duration(float64(el)*float64(o.n)/float64(s)*1.5) + o.sleep)
			wakeAll.CompareAndSwap(0, at.UnixNano())
		}
		_, err := wf.Start(ctx, c, sleepIn{D: time.Until(wake)}, &engine.StartOptions{ID: fmt.Sprintf("sleeper-%d", i)})
		return err
	})
	startElapsed := time.Since(t0)
	if failed > 0 {
		return fmt.Errorf("bench: %d starts failed; first: %v", failed, firstErr)
	}

	// Wait until every started run has reached its sleep and been
	// unloaded: none is pending or running (the pilot's have ended).
	for {
		var busy int
		if err := db.QueryRow(`SELECT count(*) FROM ` + runs + ` WHERE status IN ('pending', 'running')`).Scan(&busy); err != nil {
			return err
		}
		if busy == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	asleepAt := time.Now()
	fmt.Printf("start phase: %d runs in %.1fs (%.0f/s); %d already woke\n",
		o.n, startElapsed.Seconds(), float64(o.n)/startElapsed.Seconds(), woke.Load())
	rssAsleep := settledRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rss_before_mb=%.1f rss_asleep_mb=%.1f heap_inuse_mb=%.1f goroutines=%d\n",
		mb(rssBefore), mb(rssAsleep), mb(int64(ms.HeapInuse)), runtime.NumGoroutine())

	// The wake phase begins when the runs are due (or now, if the start
	// phase overran that moment).
	from := asleepAt
	if w := wakeAll.Load(); w != 0 && time.Unix(0, w).After(from) {
		from = time.Unix(0, w)
	} else if w != 0 {
		fmt.Printf("note: the start phase overran the wake moment by %.1fs (the pilot's rate was not kept); wake_per_s covers only the runs asleep after it\n",
			asleepAt.Sub(time.Unix(0, w)).Seconds())
	}
	time.Sleep(time.Until(from))
	var before int
	if err := db.QueryRow(`SELECT count(*) FROM `+runs+` WHERE status = 'completed' AND closed_at < $1`, from).Scan(&before); err != nil {
		return err
	}
	deadline := from.Add(max(10*time.Minute, 2*startElapsed))
	for woke.Load() < int64(o.n) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// The last ends are on their way to the database.
	for time.Now().Before(deadline) {
		var open bool
		if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM ` + runs + ` WHERE status IN ('pending', 'running', 'waiting'))`).Scan(&open); err != nil {
			return err
		}
		if !open {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The runs' own end times say when the last one completed.
	var resumed, after int
	var last sql.NullTime
	if err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE closed_at >= $1), max(closed_at) FROM `+runs+`
		WHERE status = 'completed'`, from).Scan(&resumed, &after, &last); err != nil {
		return err
	}
	wakeSpan := last.Time.Sub(from)
	wakeRate := 0.0
	if after > 0 && wakeSpan > 0 {
		wakeRate = float64(after) / wakeSpan.Seconds()
	}
	fmt.Printf("wake phase: due %.1fs after the start; %d completed before, %d in the %.1fs after (%.0f/s); total %.1fs\n",
		from.Sub(t0).Seconds(), before, after, wakeSpan.Seconds(), wakeRate, last.Time.Sub(t0).Seconds())
	growth := mb(rssAsleep - rssBefore)
	if growth < 0 {
		growth = 0
	}
	fmt.Printf("sleepers=%d rss_growth_mb=%.1f resumed=%d start_per_s=%.0f wake_per_s=%.0f\n", o.n, growth, resumed,
		float64(o.n)/startElapsed.Seconds(), wakeRate)
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
