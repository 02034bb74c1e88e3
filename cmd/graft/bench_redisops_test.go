package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestBenchAcquireRelease(t *testing.T) {
	t.Parallel()
	opts, err := redis.ParseURL(redisURL())
	require.NoError(t, err)
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.Ping(ctx).Err(), "needs Redis at %s", redisURL())
	res, err := benchAcquireRelease(ctx, c, 2000, 8)
	require.NoError(t, err)
	require.Equal(t, 2000, res.Ops)
	require.Positive(t, res.OpsPerSec)
	require.LessOrEqual(t, res.P50, res.P99)

	_, err = benchAcquireRelease(ctx, c, 0, 1)
	require.Error(t, err)
}
