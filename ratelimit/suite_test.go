package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newLimiterFunc builds a limiter under test with the given limits and clock.
type newLimiterFunc func(t *testing.T, src LimitsSource, clock Clock) Limiter

// limiterKinds lists the limiters that must pass the shared suite: whatever
// holds for one must hold for the other, apart from data loss.
func limiterKinds() map[string]newLimiterFunc {
	return map[string]newLimiterFunc{
		"Redis": func(t *testing.T, src LimitsSource, clock Clock) Limiter {
			c := newRedisClient(t)
			// A new key's recovery window is tested on its own; here it would
			// only delay every case by one LeaseTTL.
			return newTestRedisLimiter(t, c, RedisConfig{Limits: src, Clock: clock, RecoveryWindow: -1})
		},
		"Local": func(t *testing.T, src LimitsSource, clock Clock) Limiter {
			return newTestLocalLimiter(t, LocalConfig{Limits: src, Clock: clock})
		},
	}
}

func TestLimiterSuite(t *testing.T) {
	t.Parallel()
	for name, newLimiter := range limiterKinds() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runLimiterSuite(t, newLimiter)
		})
	}
}

func runLimiterSuite(t *testing.T, newLimiter newLimiterFunc) {
	ctx := context.Background()
	const key = "registry"

	t.Run("ConcurrencyLimitHoldsAndIsReached", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 3, LeaseTTL: time.Minute}), newFakeClock())
		leases := map[string]Lease{}
		for _, id := range []string{"a", "b", "c"} {
			lease, err := l.Acquire(ctx, key, id)
			require.NoError(t, err, id)
			require.Equal(t, Lease{Key: key, ID: id, Expires: lease.Expires, TTL: time.Minute}, lease)
			leases[id] = lease
		}
		_, err := l.Acquire(ctx, key, "d")
		denied := requireDenied(t, err, ReasonConcurrency)
		require.Equal(t, 3, denied.InUse)
		require.Equal(t, 3, denied.Limits.Concurrency)

		require.NoError(t, l.Release(ctx, leases["b"]))
		_, err = l.Acquire(ctx, key, "d")
		require.NoError(t, err)
		_, err = l.Acquire(ctx, key, "e")
		requireDenied(t, err, ReasonConcurrency)
	})

	t.Run("SameLeaseIDReturnsSameLease", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, Rate: 1, LeaseTTL: time.Minute}), clock)
		first, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		clock.Advance(time.Millisecond)
		// Neither a slot nor a rate token is spent the second time.
		again, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		require.Equal(t, first.ID, again.ID)
		require.Equal(t, first.Expires.Add(time.Millisecond), again.Expires, "acquiring again extends the lease")
		_, err = l.Acquire(ctx, key, "b")
		requireDenied(t, err, ReasonConcurrency)
	})

	t.Run("BurstThenSteadyRate", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Rate: 10, Burst: 3}), clock)
		for i := range 3 {
			_, err := l.Acquire(ctx, key, "burst"+string(rune('a'+i)))
			require.NoError(t, err)
		}
		_, err := l.Acquire(ctx, key, "x")
		denied := requireDenied(t, err, ReasonRate)
		require.Equal(t, 100*time.Millisecond, denied.RetryAfter)
		clock.Advance(99 * time.Millisecond)
		_, err = l.Acquire(ctx, key, "x")
		require.Equal(t, time.Millisecond, requireDenied(t, err, ReasonRate).RetryAfter)
		clock.Advance(time.Millisecond)
		_, err = l.Acquire(ctx, key, "x")
		require.NoError(t, err)
		_, err = l.Acquire(ctx, key, "y")
		requireDenied(t, err, ReasonRate)
	})

	t.Run("RateTokenSpentOnlyWithASlot", func(t *testing.T) {
		t.Parallel()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, Rate: 1, Burst: 2, LeaseTTL: time.Minute}), newFakeClock())
		a, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		for range 5 {
			_, err = l.Acquire(ctx, key, "b")
			requireDenied(t, err, ReasonConcurrency)
		}
		require.NoError(t, l.Release(ctx, a))
		// The second token of the burst is still there: the denials above
		// did not spend it.
		b, err := l.Acquire(ctx, key, "b")
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, b))
		_, err = l.Acquire(ctx, key, "c")
		requireDenied(t, err, ReasonRate)
	})

	t.Run("LeaseExpiresUnlessRenewed", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Second}), clock)
		_, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		clock.Advance(999 * time.Millisecond)
		_, err = l.Acquire(ctx, key, "b")
		require.LessOrEqual(t, requireDenied(t, err, ReasonConcurrency).RetryAfter, time.Millisecond)
		clock.Advance(time.Millisecond)
		_, err = l.Acquire(ctx, key, "b")
		require.NoError(t, err, "the lease of a holder that never came back runs out")
	})

	t.Run("RenewExtendsTheLease", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Second}), clock)
		a, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		clock.Advance(600 * time.Millisecond)
		renewed, err := l.Renew(ctx, a)
		require.NoError(t, err)
		require.Equal(t, a.Expires.Add(600*time.Millisecond), renewed.Expires)
		clock.Advance(600 * time.Millisecond)
		_, err = l.Acquire(ctx, key, "b")
		requireDenied(t, err, ReasonConcurrency)
		clock.Advance(400 * time.Millisecond)
		_, err = l.Acquire(ctx, key, "b")
		require.NoError(t, err)
	})

	t.Run("RenewOfAnExpiredLeaseWhoseSlotWasTakenIsRefused", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Second}), clock)
		a, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		clock.Advance(2 * time.Second) // a's holder paused past its TTL
		_, err = l.Acquire(ctx, key, "b")
		require.NoError(t, err, "a's slot is free once its lease ran out")
		_, err = l.Renew(ctx, a)
		require.ErrorIs(t, err, ErrLeaseLost, "a's slot was given to b: a must stop")
		_, err = l.Acquire(ctx, key, "c")
		require.Equal(t, 1, requireDenied(t, err, ReasonConcurrency).InUse, "the refused renewal recorded nothing")
	})

	t.Run("RenewRecordsAnExpiredLeaseWhileItsSlotIsFree", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Second}), clock)
		a, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		clock.Advance(2 * time.Second) // a stalled past its TTL; nobody took the slot
		renewed, err := l.Renew(ctx, a)
		require.NoError(t, err)
		require.Equal(t, clock.Now().Add(time.Second), renewed.Expires)
		_, err = l.Acquire(ctx, key, "b")
		require.Equal(t, 1, requireDenied(t, err, ReasonConcurrency).InUse, "a's call is still running, so it counts")
	})

	t.Run("LimitsChangeAtRunTime", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		var table LimitsTable
		table.Set(key, Limits{Concurrency: 1, LeaseTTL: time.Minute})
		l := newLimiter(t, &table, clock)
		a, err := l.Acquire(ctx, key, "a")
		require.NoError(t, err)
		_, err = l.Acquire(ctx, key, "b")
		requireDenied(t, err, ReasonConcurrency)

		table.Set(key, Limits{Concurrency: 2, LeaseTTL: time.Minute})
		b, err := l.Acquire(ctx, key, "b")
		require.NoError(t, err)

		table.Set(key, Limits{Concurrency: 1, LeaseTTL: time.Minute})
		require.NoError(t, l.Release(ctx, a))
		_, err = l.Acquire(ctx, key, "c")
		requireDenied(t, err, ReasonConcurrency)
		require.NoError(t, l.Release(ctx, b))
		_, err = l.Acquire(ctx, key, "c")
		require.NoError(t, err)

		// From a slow rate to a fast one: the debt run up under the slow
		// rate does not carry over.
		table.Set(key, Limits{Rate: 1})
		_, err = l.Acquire(ctx, key, "d")
		require.NoError(t, err)
		_, err = l.Acquire(ctx, key, "e")
		require.Equal(t, time.Second, requireDenied(t, err, ReasonRate).RetryAfter)
		table.Set(key, Limits{Rate: 1000})
		_, err = l.Acquire(ctx, key, "e")
		require.Equal(t, time.Millisecond, requireDenied(t, err, ReasonRate).RetryAfter)
		clock.Advance(time.Millisecond)
		_, err = l.Acquire(ctx, key, "e")
		require.NoError(t, err)
	})

	t.Run("SaturatedKeyDoesNotBlockAnother", func(t *testing.T) {
		t.Parallel()
		var table LimitsTable
		table.Set("busy", Limits{Concurrency: 2, LeaseTTL: time.Minute})
		table.Set("idle", Limits{Concurrency: 2, LeaseTTL: time.Minute})
		l := newLimiter(t, &table, newFakeClock())
		for _, id := range []string{"a", "b"} {
			_, err := l.Acquire(ctx, "busy", id)
			require.NoError(t, err)
		}
		_, err := l.Acquire(ctx, "busy", "c")
		requireDenied(t, err, ReasonConcurrency)
		for _, id := range []string{"a", "b"} {
			_, err := l.Acquire(ctx, "idle", id)
			require.NoError(t, err)
		}
	})

	t.Run("BadArgumentsAndLimitsAreErrorsNotDenials", func(t *testing.T) {
		t.Parallel()
		var table LimitsTable
		table.Set("bad", Limits{Concurrency: -1})
		l := newLimiter(t, &table, newFakeClock())
		var denied *DeniedError
		for _, tc := range []struct{ key, id string }{{"", "a"}, {key, ""}, {key, "\x00epoch"}} {
			_, err := l.Acquire(ctx, tc.key, tc.id)
			require.Error(t, err)
			require.False(t, errors.As(err, &denied))
		}
		_, err := l.Acquire(ctx, "unknown", "a")
		require.ErrorIs(t, err, ErrNoLimits)
		_, err = l.Acquire(ctx, "bad", "a")
		require.ErrorContains(t, err, "Limits.Concurrency")
		require.NoError(t, l.Release(ctx, Lease{Key: "unknown", ID: "never-held"}))
	})

	t.Run("RateWindowHoldsBurstPlusRate", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		l := newLimiter(t, StaticLimits(Limits{Rate: 100, Burst: 1}), clock)
		rng := rand.New(rand.NewPCG(1, 2))
		n := 0
		// run calls Acquire until 3s have passed, advancing the clock by
		// step after each call, and returns the times of the grants.
		run := func(step func(err error) time.Duration) []time.Time {
			var grants []time.Time
			for end := clock.Now().Add(3 * time.Second); clock.Now().Before(end); n++ {
				_, err := l.Acquire(ctx, key, "id"+strconv.Itoa(n))
				if err == nil {
					grants = append(grants, clock.Now())
				} else {
					requireDenied(t, err, ReasonRate)
				}
				clock.Advance(step(err))
			}
			return grants
		}
		// Calls at random times never see more than B + R*t.
		random := run(func(error) time.Duration { return time.Duration(rng.IntN(3000)) * time.Microsecond })
		requireRateWindow(t, random, time.Second, 101)
		// Calls that follow the retry-after hints exactly reach that bound:
		// the limiter lets the rate through, it does not only stop excess.
		hinted := run(func(err error) time.Duration {
			var denied *DeniedError
			if errors.As(err, &denied) {
				return denied.RetryAfter
			}
			return 0
		})
		require.Equal(t, 101, requireRateWindow(t, hinted, time.Second, 101))
	})
}

// requireRateWindow asserts that no window of length w, ends included,
// contains more than most of times, and returns the fullest window's count.
func requireRateWindow(t *testing.T, times []time.Time, w time.Duration, most int) int {
	t.Helper()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	j := 0
	worst := 0
	for i := range times {
		for times[i].Sub(times[j]) > w {
			j++
		}
		worst = max(worst, i-j+1)
	}
	require.LessOrEqual(t, worst, most, "grants in a %s window", w)
	t.Logf("%d grants, at most %d in any %s window", len(times), worst, w)
	return worst
}
