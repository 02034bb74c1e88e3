package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	noopmetric "go.opentelemetry.io/otel/metric/noop"

	"github.com/graftdev/graft/ratelimit"
)

// redisOpsResult is what benchAcquireRelease measured. One operation is an
// Acquire followed by a Release of the same lease.
type redisOpsResult struct {
	Ops         int
	Concurrency int
	Elapsed     time.Duration
	// OpsPerSec is Ops divided by Elapsed.
	OpsPerSec float64
	// Latency percentiles of one operation (both round trips).
	P50, P90, P99, Max time.Duration
}

// String formats r on one line, for a CLI.
func (r redisOpsResult) String() string {
	return fmt.Sprintf("ops=%d concurrency=%d elapsed=%s ops/s=%.0f p50=%s p90=%s p99=%s max=%s",
		r.Ops, r.Concurrency, r.Elapsed.Round(time.Millisecond), r.OpsPerSec, r.P50, r.P90, r.P99, r.Max)
}

// benchAcquireRelease runs n acquire+release operations against client from
// concurrency goroutines and reports throughput and latency. It uses a fresh
// key under its own prefix, with a concurrency limit equal to concurrency (so
// the limit check runs but never denies) and no rate limit, and deletes the
// key afterwards. Any denial or error stops the run and is returned.
//
// Throughput at high concurrency is bound by the client's system calls (two
// round trips per operation); passing client.AutoPipeline() instead of the
// client batches concurrent calls onto fewer writes and raises it.
func benchAcquireRelease(ctx context.Context, client redis.UniversalClient, n, concurrency int) (redisOpsResult, error) {
	if n <= 0 || concurrency <= 0 {
		return redisOpsResult{}, errors.New("bench: redis-ops: n and concurrency must be > 0")
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	prefix := "graft:bench:" + hex.EncodeToString(suffix[:])
	const key = "bench"
	lim, err := ratelimit.NewRedisLimiter(client, ratelimit.RedisConfig{
		Limits: ratelimit.StaticLimits(ratelimit.Limits{Concurrency: concurrency, LeaseTTL: time.Minute}),
		Prefix: prefix,
		// The benchmark measures steady state, not a new key's first window.
		RecoveryWindow: -1,
		MeterProvider:  noopmetric.NewMeterProvider(),
	})
	if err != nil {
		return redisOpsResult{}, err
	}
	defer lim.Close()
	defer deleteLimiterKeys(context.WithoutCancel(ctx), client, prefix)

	// Warm up: load the scripts and the connections outside the measurement.
	for i := range min(concurrency, n) {
		if err := benchOp(ctx, lim, key, "warm-"+strconv.Itoa(i), nil); err != nil {
			return redisOpsResult{}, err
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	latencies := make([][]time.Duration, concurrency)
	errs := make([]error, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range concurrency {
		count := n / concurrency
		if w < n%concurrency {
			count++
		}
		lat := make([]time.Duration, 0, count)
		wg.Go(func() {
			for i := range count {
				if err := benchOp(ctx, lim, key, strconv.Itoa(w)+"-"+strconv.Itoa(i), &lat); err != nil {
					errs[w] = err
					cancel()
					break
				}
			}
			latencies[w] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return redisOpsResult{}, err
	}

	all := slices.Concat(latencies...)
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[min(int(p*float64(len(all))), len(all)-1)] }
	return redisOpsResult{
		Ops:         len(all),
		Concurrency: concurrency,
		Elapsed:     elapsed,
		OpsPerSec:   float64(len(all)) / elapsed.Seconds(),
		P50:         pct(0.50),
		P90:         pct(0.90),
		P99:         pct(0.99),
		Max:         all[len(all)-1],
	}, nil
}

func benchOp(ctx context.Context, l *ratelimit.RedisLimiter, key, id string, lat *[]time.Duration) error {
	t0 := time.Now()
	lease, err := l.Acquire(ctx, key, id)
	if err != nil {
		return err
	}
	if err := l.Release(ctx, lease); err != nil {
		return err
	}
	if lat != nil {
		*lat = append(*lat, time.Since(t0))
	}
	return nil
}

// deleteLimiterKeys deletes every key a limiter with prefix wrote: each
// limiter key's state and the prefix's instance marker.
func deleteLimiterKeys(ctx context.Context, client redis.UniversalClient, prefix string) {
	keys := []string{"{" + prefix + "}:instance"}
	iter := client.Scan(ctx, 0, "{"+prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	_ = client.Del(ctx, keys...).Err()
}
