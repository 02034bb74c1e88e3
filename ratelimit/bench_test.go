package ratelimit

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// BenchmarkAcquireRelease measures one Acquire plus one Release against the
// test Redis from 8*GOMAXPROCS goroutines, through a plain client and through
// go-redis's automatic pipelining, and reports throughput and the median and
// 99th percentile latency of the pair.
func BenchmarkAcquireRelease(b *testing.B) {
	c := newRedisClient(b)
	ap, err := c.AutoPipeline()
	require.NoError(b, err)
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
	}{{"client", c}, {"autopipeline", ap}} {
		b.Run(tc.name, func(b *testing.B) {
			l := newTestRedisLimiter(b, tc.client, RedisConfig{
				Limits:         StaticLimits(Limits{LeaseTTL: time.Minute}),
				RecoveryWindow: -1,
			})
			ctx := context.Background()
			var ids atomic.Int64
			var mu sync.Mutex
			var all []time.Duration
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var lat []time.Duration
				defer func() {
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
				}()
				for pb.Next() {
					t0 := time.Now()
					lease, err := l.Acquire(ctx, "provider", strconv.FormatInt(ids.Add(1), 10))
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Release(ctx, lease); err != nil {
						b.Error(err)
						return
					}
					lat = append(lat, time.Since(t0))
				}
			})
			b.StopTimer()
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
}
