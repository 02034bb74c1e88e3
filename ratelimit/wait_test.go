package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func TestWaitGetsASlotWhenOneIsReleased(t *testing.T) {
	t.Parallel()
	// A poll interval far beyond the test's patience: only the release's
	// wake-up can end the wait in time.
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1}), PollInterval: time.Hour})
	ctx := context.Background()
	a, err := l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := Wait(ctx, l, "registry", "b", time.Hour)
		done <- err
	}()
	// Release only once b is queued, so that the release must wake it.
	eventually(t, 5*time.Second, func() bool {
		l.waits.mu.Lock()
		defer l.waits.mu.Unlock()
		q := l.waits.m["registry"]
		return q != nil && len(q.turn) == 1
	}, "b never queued")
	require.NoError(t, l.Release(ctx, a))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the release did not wake the waiter")
	}
}

func TestWaitSnoozes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var table LimitsTable
	table.Set("busy", Limits{Concurrency: 1})
	table.Set("slow", Limits{Rate: 1.0 / 3600})
	l := newTestLocalLimiter(t, LocalConfig{Limits: &table})
	_, err := l.Acquire(ctx, "busy", "a")
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "slow", "a")
	require.NoError(t, err)

	t.Run("AfterMaxWait", func(t *testing.T) {
		start := time.Now()
		_, err := Wait(ctx, l, "busy", "b", 100*time.Millisecond)
		var snooze *engine.SnoozeError
		require.ErrorAs(t, err, &snooze)
		require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
		require.Equal(t, ReasonConcurrency, requireDenied(t, snooze, ReasonConcurrency).Reason)
		require.Positive(t, snooze.After)
	})
	t.Run("AtOnceWhenTheHintIsBeyondMaxWait", func(t *testing.T) {
		// The next token is an hour away and MaxWait is half of that: a
		// Wait that waited would end with the test's context, not snooze.
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := Wait(wctx, l, "slow", "b", 30*time.Minute)
		var snooze *engine.SnoozeError
		require.ErrorAs(t, err, &snooze, "waiting cannot help, so it does not wait")
		require.Greater(t, snooze.After, 30*time.Minute)
		requireDenied(t, snooze, ReasonRate)
	})
	t.Run("ZeroMaxWaitTriesOnce", func(t *testing.T) {
		_, err := Wait(ctx, l, "busy", "b", 0)
		var snooze *engine.SnoozeError
		require.ErrorAs(t, err, &snooze)
	})
}

func TestWaitReturnsOtherErrorsAtOnce(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: &LimitsTable{}})
	_, err := Wait(context.Background(), l, "unknown", "a", time.Hour)
	require.ErrorIs(t, err, ErrNoLimits)
}

func TestWaitStopsWithItsContext(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := Wait(ctx, l, "registry", "b", time.Hour)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait ignored its context")
	}
}

// TestWaitWorksWithAnyLimiter: a Limiter from outside this package gets the
// same Wait, without the in-process queue.
func TestWaitWorksWithAnyLimiter(t *testing.T) {
	t.Parallel()
	inner := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1}), PollInterval: 5 * time.Millisecond})
	l := struct{ Limiter }{inner} // hides the hooks
	ctx := context.Background()
	a, err := l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := Wait(ctx, l, "registry", "b", 10*time.Second)
		done <- err
	}()
	require.NoError(t, l.Release(ctx, a))
	require.NoError(t, <-done)
}

// TestWaitersOfAProcessPollAsOne: fifty goroutines waiting for one key must
// not each poll Redis. Only the head of the in-process queue polls, so the
// number of Acquire calls stays near one per poll interval.
func TestWaitersOfAProcessPollAsOne(t *testing.T) {
	t.Parallel()
	c := newRedisClient(t)
	reader := sdkmetric.NewManualReader()
	l := newTestRedisLimiter(t, c, RedisConfig{
		Limits:         StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Minute}),
		RecoveryWindow: -1,
		PollInterval:   20 * time.Millisecond,
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	ctx := context.Background()
	blocker, err := l.Acquire(ctx, "registry", "blocker")
	require.NoError(t, err)

	const waiters = 50
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for i := range waiters {
		wg.Go(func() {
			lease, err := Wait(ctx, l, "registry", "w"+strconv.Itoa(i), 30*time.Second)
			if err == nil {
				err = l.Release(ctx, lease)
			}
			errs <- err
		})
	}
	// Let them queue and poll for a while, then release the blocker; each
	// waiter's release then wakes the next.
	time.Sleep(300 * time.Millisecond) // the span over which polls are counted
	require.NoError(t, l.Release(ctx, blocker))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	calls := sumCounter(t, reader, MetricAcquisitions)
	// 1 blocker + 50 grants + at most 50 first tries + ~15 polls in 300ms,
	// plus the tries each hand-over makes. Fifty independent pollers would
	// make about 750 in the 300ms alone.
	require.Less(t, calls, int64(250), "acquire calls")
	t.Logf("%d acquire calls for %d waiters", calls, waiters)
}

func TestHoldKeepsTheLeaseUntilRelease(t *testing.T) {
	t.Parallel()
	c := newRedisClient(t)
	const ttl = time.Second // renewals every third of it: room for a loaded machine
	l := newTestRedisLimiter(t, c, RedisConfig{Limits: StaticLimits(Limits{Concurrency: 1, LeaseTTL: ttl}), RecoveryWindow: -1})
	ctx, cancel := context.WithCancel(context.Background())
	h, err := Hold(ctx, l, "registry", "a", time.Second)
	require.NoError(t, err)
	first := h.Lease()
	cancel() // the caller's context ending does not stop the renewals
	for end := time.Now().Add(5 * ttl / 2); time.Now().Before(end); {
		_, err := l.Acquire(context.Background(), "registry", "b")
		requireDenied(t, err, ReasonConcurrency)
		time.Sleep(20 * time.Millisecond) // polling pace, not synchronisation
	}
	require.True(t, h.Lease().Expires.After(first.Expires), "the lease was renewed")
	require.NoError(t, h.Release(context.Background()))
	require.NoError(t, h.Release(context.Background()), "a second release is a no-op")
	_, err = l.Acquire(context.Background(), "registry", "b")
	require.NoError(t, err)
}

func TestHoldReturnsWaitErrors(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
	a, err := Hold(context.Background(), l, "registry", "a", time.Second)
	require.NoError(t, err)
	_, err = Hold(context.Background(), l, "registry", "b", 0)
	var snooze *engine.SnoozeError
	require.True(t, errors.As(err, &snooze))
	require.NoError(t, a.Release(context.Background()))
}
