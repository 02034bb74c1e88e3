package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/ratelimit"
)

// The fake provider's latency: long enough that the concurrency limit
// matters, spread so that calls end at all sorts of moments.
const (
	providerMinLatency = 20 * time.Millisecond
	providerMaxLatency = 50 * time.Millisecond
)

// providerBurst is the burst the provider scenario's limiter allows. The
// provider counts starts per calendar second, and a GCRA with burst B grants
// at most B+Rate-1 leases in any second, so the limiter runs at
// Rate = limit-(B-1); see providerLimits. Burst 8 lets the waiter wake up to
// seven intervals (about 14ms at 500/s) late without losing rate, where with
// Burst 1 every wake-up delay is rate lost; a larger burst would cost more
// rate than it saves.
const providerBurst = 8

// providerLimits turns a provider's published limits ("at most conc calls in
// flight and perSecond calls started in any calendar second") into the
// limiter's. A GCRA with burst B and rate r grants at most B + r*t leases in
// any window of t seconds, so at most B + r - 1 in a calendar second (a
// half-open window). Running at r = perSecond - (B-1) keeps that at
// perSecond; the 1% off the top covers calls that reach the provider a few
// milliseconds later or earlier than their grant, which shifts calls across
// a second's boundary.
func providerLimits(conc int, perSecond float64) ratelimit.Limits {
	l := ratelimit.Limits{Concurrency: conc}
	if perSecond > 0 {
		burst := providerBurst
		if perSecond < 4*float64(burst) {
			burst = 1
		}
		l.Burst = burst
		l.Rate = (perSecond - float64(burst-1)) * 0.99
	}
	return l
}

// fakeProvider is an HTTP service that holds its callers to nothing but
// records, for every call, whether the caller broke its limits: a call that
// arrives while conc calls are in flight, or after perSecond calls already
// started in the same calendar second, is a violation.
type fakeProvider struct {
	conc      int
	perSecond float64

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	starts      map[int64]int // calendar second -> calls started in it
	violations  int
	calls       int
	first, last time.Time // first start, last end
	ids         map[string]int
}

func newFakeProvider(conc int, perSecond float64) *fakeProvider {
	return &fakeProvider{conc: conc, perSecond: perSecond, starts: make(map[int64]int), ids: make(map[string]int)}
}

func (p *fakeProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	p.begin(id)
	time.Sleep(providerMinLatency + mrand.N(providerMaxLatency-providerMinLatency))
	// The call ends before the response is written: the caller cannot
	// release its slot before the provider counts the call as over.
	p.end()
	_, _ = io.WriteString(w, "ok")
}

func (p *fakeProvider) begin(id string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	sec := now.Unix()
	if p.conc > 0 && p.inFlight >= p.conc {
		p.violations++
	} else if p.perSecond > 0 && float64(p.starts[sec]) >= p.perSecond {
		p.violations++
	}
	p.inFlight++
	p.maxInFlight = max(p.maxInFlight, p.inFlight)
	p.starts[sec]++
	p.calls++
	p.ids[id]++
	if p.first.IsZero() {
		p.first = now
	}
}

func (p *fakeProvider) end() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	p.last = now
}

// providerStats is what the provider saw.
type providerStats struct {
	calls, distinct, violations, maxInFlight, maxStartsPerSec int
	// achieved is calls per second from the first start to the last end.
	achieved float64
}

func (p *fakeProvider) stats() providerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := providerStats{calls: p.calls, distinct: len(p.ids), violations: p.violations, maxInFlight: p.maxInFlight}
	for _, n := range p.starts {
		s.maxStartsPerSec = max(s.maxStartsPerSec, n)
	}
	if span := p.last.Sub(p.first).Seconds(); span > 0 {
		s.achieved = float64(p.calls) / span
	}
	return s
}

type providerCall struct{ N int }

// benchProvider runs o.n workflows whose one activity calls a fake provider
// on loopback, held to -limit-concurrency and -limit-rate by the Redis
// limiter through the ratelimit activity interceptor. All workflows are
// started at once, so the provider's backlog is as deep as a worker holds,
// and the interceptor's snoozes are what keeps it waiting. It then measures
// the limiter's own acquire+release cost against the same Redis. The last
// line reports what the provider saw.
func benchProvider(o benchOpts) error {
	if o.limitConc < 0 || o.limitRate < 0 || math.IsNaN(o.limitRate) || math.IsInf(o.limitRate, 0) {
		return fmt.Errorf("bench: -limit-concurrency and -limit-rate must be >= 0")
	}
	ctx := context.Background()
	rc, err := openRedis(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()

	prov := newFakeProvider(o.limitConc, o.limitRate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: prov, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/call?id="
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute,
	}}

	const key = "fake"
	limits := providerLimits(o.limitConc, o.limitRate)
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	prefix := "graft:bench:provider:" + hex.EncodeToString(suffix[:])
	lim, err := ratelimit.NewRedisLimiter(rc, ratelimit.RedisConfig{
		Limits: ratelimit.StaticLimits(limits),
		Prefix: prefix,
		// The prefix is new, so no lease can have been lost: skip the
		// recovery window a new key otherwise waits.
		RecoveryWindow: -1,
	})
	if err != nil {
		return err
	}
	defer lim.Close()
	defer deleteLimiterKeys(context.Background(), rc, prefix)
	var snoozes, maxAttempt atomic.Int64
	icpt, err := ratelimit.NewActivityInterceptor(ratelimit.InterceptorConfig{
		Limiter: lim,
		Key:     ratelimit.KeyByActivity(map[string]string{"bench.provider.call": key}),
		OnSnooze: func(context.Context, *engine.ActivityInput, *engine.SnoozeError) {
			snoozes.Add(1)
		},
	})
	if err != nil {
		return err
	}

	call := engine.NewActivity("bench.provider.call", func(ctx context.Context, in providerCall) (int, error) {
		info := engine.ActivityInfoOf(ctx)
		for {
			m := maxAttempt.Load()
			if int64(info.Attempt) <= m || maxAttempt.CompareAndSwap(m, int64(info.Attempt)) {
				break
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+url.QueryEscape(info.IdempotencyKey), nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("provider: %s", resp.Status)
		}
		return in.N, nil
	}).WithOptions(engine.ActivityOptions{StartToCloseTimeout: time.Minute})
	wf := engine.NewWorkflow("bench.provider", func(ctx engine.Context, in providerCall) (int, error) {
		return call.Run(ctx, in)
	})

	// Generous worker limits: the limiter is what is measured, and snoozed
	// activities hold no activity slot anyway.
	env, err := newBenchEnv(o, engine.Config{}, engine.WorkerConfig{
		MaxWorkflows: 1000, MaxActivities: 1000, ClaimBatch: 500,
		Interceptors: []engine.Interceptor{icpt},
	}, call, wf)
	if err != nil {
		return err
	}
	defer env.cleanup()
	c := env.e.Client()

	start := time.Now()
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range o.c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= o.n {
					return
				}
				if _, err := wf.Start(ctx, c, providerCall{N: i}, &engine.StartOptions{ID: fmt.Sprintf("provider-%d", i)}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("bench: %d starts failed; first: %v", f, firstErr.Load())
	}
	started := time.Since(start)

	// Wait for every run to close. At the limit's rate that takes n/rate
	// seconds; allow several times that.
	runs := pq.QuoteIdentifier(o.schema) + ".runs"
	patience := 2*time.Minute + time.Duration(float64(o.n)/max(limits.Rate, 1)*3*float64(time.Second))
	deadline := time.Now().Add(patience)
	for {
		var open, bad int
		err := env.e.DB().QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')),
			count(*) FILTER (WHERE status IN ('failed', 'cancelled')) FROM `+runs).Scan(&open, &bad)
		if err != nil {
			return err
		}
		if bad > 0 {
			return fmt.Errorf("bench: %d workflows failed", bad)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %d workflows still open after %s", open, patience)
		}
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	st := prov.stats()
	if st.distinct != o.n {
		return fmt.Errorf("bench: the provider saw %d distinct calls, want %d", st.distinct, o.n)
	}

	fmt.Printf("workflows=%d elapsed_s=%.2f start_s=%.2f limiter: concurrency=%d rate=%.2f burst=%d snoozes=%d max_attempt=%d calls=%d\n",
		o.n, elapsed.Seconds(), started.Seconds(), limits.Concurrency, limits.Rate, limits.Burst,
		snoozes.Load(), maxAttempt.Load(), st.calls)
	if err := printRedisOps(ctx, rc); err != nil {
		return err
	}
	fmt.Printf("provider=fake violations=%d max_in_flight=%d max_starts_per_s=%d achieved_rate=%.1f\n",
		st.violations, st.maxInFlight, st.maxStartsPerSec, st.achieved)
	return nil
}

// benchRedisOps measures the limiter's acquire+release against Redis.
func benchRedisOps(o benchOpts) error {
	ctx := context.Background()
	rc, err := openRedis(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	return printRedisOps(ctx, rc)
}

// printRedisOps runs benchAcquireRelease twice and prints a line
// for each: for latency, a few callers through a plain client (one round
// trip per call, no queueing); for throughput, many callers through
// go-redis's automatic pipelining (concurrent calls share writes and reads).
func printRedisOps(ctx context.Context, rc *redis.Client) error {
	res, err := benchAcquireRelease(ctx, rc, 20000, 4)
	if err != nil {
		return err
	}
	fmt.Printf("redis-ops latency client=plain %s\n", res)
	ap, err := rc.AutoPipeline()
	if err != nil {
		return err
	}
	defer ap.Close()
	res, err = benchAcquireRelease(ctx, ap, 100000, 128)
	if err != nil {
		return err
	}
	fmt.Printf("redis-ops throughput client=autopipeline %s\n", res)
	return nil
}

func openRedis(ctx context.Context) (*redis.Client, error) {
	opts, err := redis.ParseURL(redisURL())
	if err != nil {
		return nil, fmt.Errorf("GRAFT_REDIS_URL: %w", err)
	}
	opts.PoolSize = max(opts.PoolSize, 128)
	rc := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rc.Ping(pctx).Err(); err != nil {
		rc.Close()
		return nil, errors.Join(fmt.Errorf("connect to Redis at %s", redactURL(redisURL())), err)
	}
	return rc, nil
}
