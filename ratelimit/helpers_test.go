package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/graftdev/graft/internal/devenv"
)

// redisURL is the Redis the tests use; they share it, so each test works
// under its own key prefix and never flushes the database.
func redisURL() string { return devenv.RedisURL() }

func redisOptions(t testing.TB) *redis.Options {
	t.Helper()
	opts, err := redis.ParseURL(redisURL())
	require.NoError(t, err)
	return opts
}

// newRedisClient connects to the test Redis and fails the test if it is not
// there: these tests exist to run against a real Redis.
func newRedisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(redisOptions(t))
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Ping(ctx).Err(), "the ratelimit tests need Redis at %s (set GRAFT_REDIS_URL)", redisURL())
	return c
}

// testPrefix is a key prefix unique to this test run; its keys are deleted
// when the test ends.
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_", "*", "_", "?", "_", "[", "_", "]", "_").Replace(t.Name())
	prefix := "graft:test:" + name + ":" + hex.EncodeToString(b[:])
	t.Cleanup(func() { deletePrefix(t, c, prefix) })
	return prefix
}

// deletePrefix deletes every key a limiter with prefix wrote: the way these
// tests simulate Redis losing its data without disturbing other tests.
func deletePrefix(t testing.TB, c redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for _, pattern := range []string{"{" + prefix + ":*", "{" + prefix + "}:*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		require.NoError(t, iter.Err())
	}
	keys = append(keys, instanceKey(prefix))
	if len(keys) > 0 {
		require.NoError(t, c.Del(ctx, keys...).Err())
	}
}

func newTestRedisLimiter(t testing.TB, c redis.UniversalClient, cfg RedisConfig) *RedisLimiter {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix(t, c)
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = noop.NewMeterProvider()
	}
	l, err := NewRedisLimiter(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newTestLocalLimiter(t testing.TB, cfg LocalConfig) *LocalLimiter {
	t.Helper()
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = noop.NewMeterProvider()
	}
	l, err := NewLocalLimiter(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// fakeClock is a Clock moved by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	// A fixed, whole-second start keeps failures reproducible.
	return &fakeClock{now: time.Unix(1_800_000_000, 0)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// requireDenied asserts that err is a denial for reason and returns it.
func requireDenied(t testing.TB, err error, reason Reason) *DeniedError {
	t.Helper()
	var denied *DeniedError
	require.ErrorAs(t, err, &denied)
	require.Equal(t, reason, denied.Reason, "denial: %v", err)
	require.Positive(t, denied.RetryAfter)
	return denied
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: "+msg, append([]any{within}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func errorsAs[T error](err error, target *T) bool { return errors.As(err, target) }
