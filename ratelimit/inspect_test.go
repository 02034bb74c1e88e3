package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestInspectorSeesWhatLimitersDo: two limiters (two workers) share a
// prefix; the Inspector lists the key with its configured limits, the
// leases in flight, the recent rate and the throttled waiters; an
// operator's override reaches both limiters, which enforce it, and clearing
// it restores the configured limits.
func TestInspectorSeesWhatLimitersDo(t *testing.T) {
	t.Parallel()
	c := newRedisClient(t)
	prefix := testPrefix(t, c)
	cfg := RedisConfig{Prefix: prefix, Limits: StaticLimits(Limits{Concurrency: 3, Rate: 1000, Burst: 10}), RefreshInterval: 20 * time.Millisecond, RecoveryWindow: -1}
	a := newTestRedisLimiter(t, c, cfg)
	b := newTestRedisLimiter(t, c, cfg)
	in, err := NewInspector(c, prefix)
	require.NoError(t, err)
	ctx := context.Background()

	var leases []Lease
	for i := range 3 {
		l, err := a.Acquire(ctx, "registry", fmt.Sprintf("a-%d", i))
		require.NoError(t, err)
		leases = append(leases, l)
	}
	n, err := in.InFlight(ctx, "registry")
	require.NoError(t, err)
	require.Equal(t, 3, n)

	// A call on the other worker waits for a slot: a throttled waiter.
	wctx, cancelWait := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = Wait(wctx, b, "registry", "b-0", time.Minute)
	}()
	eventually(t, 10*time.Second, func() bool {
		w, err := in.Waiters(ctx, "registry")
		return err == nil && w == 1
	}, "the waiter to be reported")
	cancelWait()
	wg.Wait()

	infos, err := in.Inspect(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	k := infos[0]
	require.Equal(t, "registry", k.Key)
	require.Equal(t, &Override{Concurrency: 3, Rate: 1000, Burst: 10}, k.Configured)
	require.Nil(t, k.Override)
	require.Equal(t, 3, k.InFlight)
	eventually(t, 10*time.Second, func() bool {
		_, _ = a.Acquire(ctx, "registry", "a-0") // a held lease: a call that refreshes
		r, err := in.RecentRate(ctx, "registry")
		return err == nil && r > 0
	}, "the grants to be reported")
	for _, l := range leases {
		require.NoError(t, a.Release(ctx, l))
	}

	// An override of one slot reaches both limiters.
	require.NoError(t, in.SetOverride(ctx, "registry", Override{Concurrency: 1, Rate: 1000, Burst: 10}))
	for _, lim := range []*RedisLimiter{a, b} {
		eventually(t, 10*time.Second, func() bool {
			first, err := lim.Acquire(ctx, "registry", "one")
			require.NoError(t, err)
			defer func() { require.NoError(t, lim.Release(ctx, first)) }()
			second, err := lim.Acquire(ctx, "registry", "two")
			if err == nil {
				require.NoError(t, lim.Release(ctx, second))
				return false
			}
			var denied *DeniedError
			require.True(t, errors.As(err, &denied), "%v", err)
			return denied.Reason == ReasonConcurrency && denied.Limits.Concurrency == 1
		}, "the override to be enforced")
	}
	k, err = in.Key(ctx, "registry")
	require.NoError(t, err)
	require.Equal(t, &Override{Concurrency: 1, Rate: 1000, Burst: 10}, k.Override)
	require.Equal(t, k.Override, k.Effective())

	require.NoError(t, in.ClearOverride(ctx, "registry"))
	eventually(t, 10*time.Second, func() bool {
		var held []Lease
		defer func() {
			for _, l := range held {
				require.NoError(t, b.Release(ctx, l))
			}
		}()
		for i := range 3 {
			l, err := b.Acquire(ctx, "registry", fmt.Sprintf("c-%d", i))
			if err != nil {
				return false
			}
			held = append(held, l)
		}
		return true
	}, "the configured limits to apply again")

	// Bad overrides are refused, naming the field.
	require.ErrorContains(t, in.SetOverride(ctx, "registry", Override{Concurrency: -1}), "Concurrency")
	require.ErrorContains(t, in.SetOverride(ctx, "", Override{}), "empty key")
}
