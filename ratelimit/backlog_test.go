package ratelimit

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBacklogBoundsWaiters(t *testing.T) {
	t.Parallel()
	b := newBacklog()
	now := time.Unix(1_800_000_000, 0)

	for n := range 2 {
		ok, _, _ := b.arrive("k", "w"+strconv.Itoa(n), 2, now)
		require.True(t, ok)
	}
	b.snoozed("k", "s1", time.Second, now)
	ok, ahead, rate := b.arrive("k", "late", 2, now)
	require.False(t, ok)
	require.Equal(t, 3, ahead, "two waiting and one snoozed")
	require.Zero(t, rate, "nothing granted yet")

	// A snoozed attempt that comes back is no longer ahead of anyone.
	ok, ahead, _ = b.arrive("k", "s1", 2, now)
	require.False(t, ok)
	require.Equal(t, 2, ahead)

	// Other keys and unbounded callers are not affected.
	ok, _, _ = b.arrive("other", "x", 2, now)
	require.True(t, ok)
	ok, _, _ = b.arrive("k", "y", -1, now)
	require.True(t, ok)
	require.Equal(t, 3, b.waitingFor("k"))
}

func TestBacklogGrantRate(t *testing.T) {
	t.Parallel()
	b := newBacklog()
	now := time.Unix(1_800_000_000, 0)
	const rate = 500.0
	step := time.Duration(float64(time.Second) / rate)
	grant := func() {
		ok, _, _ := b.arrive("k", "g", -1, now)
		require.True(t, ok)
		b.snoozed("k", "keep", time.Hour, now) // keeps the key's state alive
		b.left("k", true, now)
		now = now.Add(step)
	}
	// Right from the start, the estimate is about the true rate rather than
	// ramping up from zero.
	for range 50 {
		grant()
	}
	require.InDelta(t, rate, b.keys["k"].rateAt(now), rate*0.15, "after 0.1s")
	for range 2000 {
		grant()
	}
	require.InDelta(t, rate, b.keys["k"].rateAt(now), rate*0.05, "after 4s")

	// A key that stops granting is seen to stop.
	now = now.Add(5 * time.Second)
	require.Less(t, b.keys["k"].rateAt(now), rate/100)
}

func TestBacklogForgets(t *testing.T) {
	t.Parallel()
	b := newBacklog()
	now := time.Unix(1_800_000_000, 0)
	ok, _, _ := b.arrive("k", "a", 1, now)
	require.True(t, ok)
	b.left("k", true, now)
	require.Empty(t, b.keys, "an idle key costs nothing")

	// Snoozed attempts that never come back are forgotten after lostAfter.
	b.snoozed("k", "lost", time.Second, now)
	now = now.Add(time.Second + lostAfter + sweepEvery + time.Millisecond)
	ok, ahead, _ := b.arrive("k", "b", 1, now)
	require.True(t, ok)
	require.Zero(t, ahead)
	require.Empty(t, b.keys["k"].snoozed)
	b.left("k", false, now)
	require.Empty(t, b.keys)
}

func TestOverflowSnooze(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{})})
	i := newTestInterceptor(t, InterceptorConfig{Limiter: l, MaxWait: 100 * time.Millisecond})
	for range 100 {
		// No grant rate to go by: MaxWait or two.
		d := i.overflowSnooze(10, 0)
		require.GreaterOrEqual(t, d, 100*time.Millisecond)
		require.Less(t, d, 200*time.Millisecond)
		// 999 ahead at 500/s: back in the second half of the two seconds
		// they take.
		d = i.overflowSnooze(999, 500)
		require.GreaterOrEqual(t, d, time.Second)
		require.LessOrEqual(t, d, 2*time.Second)
		// A short backlog comes back soon, but not at once.
		d = i.overflowSnooze(1, 500)
		require.Equal(t, minOverflowSnooze, d)
		// A backlog that would take very long is looked at again anyway.
		d = i.overflowSnooze(1000, 1)
		require.GreaterOrEqual(t, d, maxOverflowSnooze/2)
		require.LessOrEqual(t, d, maxOverflowSnooze)
	}
}
