package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// RedisPrefix connects to the test Redis (shared by every test) and returns
// a client and a key prefix of the test's own; the keys a rate limiter
// writes under it ("{prefix:...}" and "{prefix}:...") are deleted when the
// test ends. Never flush the shared Redis.
func RedisPrefix(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL())
	require.NoError(t, err)
	rc := redis.NewClient(opts)
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, rc.Ping(ctx).Err(), "Redis at %s (run scripts/services.sh)", RedisURL())
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "graft:test:" + Name(t) + ":" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx := context.Background()
		for _, p := range []string{"{" + prefix + ":*", "{" + prefix + "}:*"} {
			keys, _ := rc.Keys(ctx, p).Result()
			if len(keys) > 0 {
				rc.Del(ctx, keys...)
			}
		}
	})
	return rc, prefix
}
