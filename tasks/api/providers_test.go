package api_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/ratelimit"
	"github.com/graftdev/graft/tasks/api"
)

// testLimiter is a worker's limiter on the test Redis under a prefix of its
// own, and the inspector the server reads it with.
func testLimiter(t *testing.T, limits ratelimit.Limits) (*ratelimit.RedisLimiter, *ratelimit.Inspector, redis.UniversalClient) {
	t.Helper()
	rc, prefix := testenv.RedisPrefix(t)
	l, err := ratelimit.NewRedisLimiter(rc, ratelimit.RedisConfig{Prefix: prefix, Limits: ratelimit.StaticLimits(limits),
		RecoveryWindow: -1, RefreshInterval: 20 * time.Millisecond, MeterProvider: noop.NewMeterProvider()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	in, err := ratelimit.NewInspector(rc, prefix)
	require.NoError(t, err)
	return l, in, rc
}

// TestProvidersThroughTheAPI: the providers list shows a key with its
// limits and calls in flight; an admin's change reaches the worker's
// limiter, which enforces it; the change is audited; others may not change
// limits, and bad limits are refused with the field named.
func TestProvidersThroughTheAPI(t *testing.T) {
	l, in, _ := testLimiter(t, ratelimit.Limits{Concurrency: 4, Rate: 500, Burst: 5})
	ev := newEnv(t, api.Config{Providers: in})
	ctx := testenv.Ctx(t, 60*time.Second)
	lease, err := l.Acquire(ctx, "registry", "call-1")
	require.NoError(t, err)

	list, err := ev.client(t, "viewer").ListProvidersWithResponse(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, list.StatusCode(), string(list.Body))
	require.Len(t, list.JSON200.Items, 1)
	p := list.JSON200.Items[0]
	require.Equal(t, "registry", p.Key)
	require.Equal(t, 1, p.InFlight)
	require.Equal(t, &api.ProviderLimits{Concurrency: 4, Rate: 500, Burst: 5}, p.Limits)
	require.Nil(t, p.Override)

	for _, role := range []string{"operator", "viewer", "customer"} {
		res, err := ev.client(t, role).SetProviderLimitsWithResponse(ctx, "registry", api.ProviderLimitsChange{Concurrency: ptr(1), Reason: "r"})
		require.NoError(t, err)
		require.Equal(t, 403, res.StatusCode(), role)
	}
	bad, err := ev.client(t, "admin").SetProviderLimitsWithResponse(ctx, "registry", api.ProviderLimitsChange{Concurrency: ptr(-1), Reason: "r"})
	require.NoError(t, err)
	require.Equal(t, 400, bad.StatusCode(), string(bad.Body))
	require.Contains(t, string(bad.Body), "Concurrency")

	set, err := ev.client(t, "admin").SetProviderLimitsWithResponse(ctx, "registry", api.ProviderLimitsChange{Concurrency: ptr(1), Reason: "registry asked us to slow down"})
	require.NoError(t, err)
	require.Equal(t, 200, set.StatusCode(), string(set.Body))
	require.Equal(t, &api.ProviderLimits{Concurrency: 1, Rate: 500, Burst: 5}, set.JSON200.Override)
	require.Equal(t, set.JSON200.Override, set.JSON200.Limits)

	// The worker's limiter enforces one call in flight: the lease it holds.
	testenv.Eventually(t, 10*time.Second, func() bool {
		second, err := l.Acquire(ctx, "registry", "call-2")
		if err == nil {
			require.NoError(t, l.Release(ctx, second))
			return false
		}
		var denied *ratelimit.DeniedError
		return errors.As(err, &denied) && denied.Limits.Concurrency == 1
	}, "the limiter to enforce the new limit")
	var n int
	require.NoError(t, ev.e.DB().Get(&n, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE action = 'provider_limits' AND actor = 'ada'`))
	require.Equal(t, 1, n)

	clr, err := ev.client(t, "admin").SetProviderLimitsWithResponse(ctx, "registry", api.ProviderLimitsChange{Clear: ptr(true), Reason: "back to normal"})
	require.NoError(t, err)
	require.Equal(t, 200, clr.StatusCode(), string(clr.Body))
	require.Nil(t, clr.JSON200.Override)
	require.NoError(t, l.Release(ctx, lease))
}

// TestProvidersWithoutRedis: when Redis does not answer, the providers list
// and a change of limits answer 503 naming Redis, not a bare 500.
func TestProvidersWithoutRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String() // nothing answers there once ln is closed
	require.NoError(t, ln.Close())
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	in, err := ratelimit.NewInspector(rc, "graft:test")
	require.NoError(t, err)
	ev := newEnv(t, api.Config{Providers: in})
	ctx := testenv.Ctx(t, 60*time.Second)

	list, err := ev.client(t, "viewer").ListProvidersWithResponse(ctx)
	require.NoError(t, err)
	require.Equal(t, 503, list.StatusCode(), string(list.Body))
	require.Contains(t, string(list.Body), `"title":"Redis unavailable"`)
	require.NotContains(t, string(list.Body), addr, "the address stays in the log")
	set, err := ev.client(t, "admin").SetProviderLimitsWithResponse(ctx, "registry", api.ProviderLimitsChange{Concurrency: ptr(1), Reason: "r"})
	require.NoError(t, err)
	require.Equal(t, 503, set.StatusCode(), string(set.Body))
	require.Contains(t, string(set.Body), "does not answer")
}
