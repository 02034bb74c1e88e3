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
		ok, _ := b.arrive("k", "w"+strconv.Itoa(n), 2, now)
		require.True(t, ok)
	}
	b.snoozed("k", "s1", time.Second, now)
	ok, p := b.arrive("k", "late", 2, now)
	require.False(t, ok)
	require.Equal(t, 3, p.ahead, "two waiting and one snoozed")
	require.Zero(t, p.rate, "nothing granted yet")
	require.False(t, p.stopped, "nothing granted yet is not stopped")
	require.False(t, p.saturated, "the waiters only just came")

	// A snoozed attempt that comes back is no longer ahead of anyone.
	ok, p = b.arrive("k", "s1", 2, now)
	require.False(t, ok)
	require.Equal(t, 2, p.ahead)

	// Other keys and unbounded callers are not affected.
	ok, _ = b.arrive("other", "x", 2, now)
	require.True(t, ok)
	ok, _ = b.arrive("k", "y", -1, now)
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
		ok, _ := b.arrive("k", "g", -1, now)
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

	// A pause of a second does not make the key look a hundred times slower
	// to attempts turned away: they are told its rate as of its last grant.
	r, stopped := b.keys["k"].grantRate(now.Add(time.Second))
	require.False(t, stopped)
	require.InDelta(t, rate, r, rate*0.05)

	// A key that stops granting is seen to stop.
	last := b.keys["k"].last
	now = now.Add(5 * time.Second)
	require.Less(t, b.keys["k"].rateAt(now), rate/100)
	_, stopped = b.keys["k"].grantRate(last.Add(stoppedAfter + time.Millisecond))
	require.True(t, stopped)
}

func TestBacklogForgets(t *testing.T) {
	t.Parallel()
	b := newBacklog()
	now := time.Unix(1_800_000_000, 0)
	ok, _ := b.arrive("k", "a", 1, now)
	require.True(t, ok)
	b.left("k", true, now)
	require.Empty(t, b.keys, "an idle key costs nothing")

	// Snoozed attempts that never come back are forgotten after lostAfter.
	b.snoozed("k", "lost", time.Second, now)
	now = now.Add(time.Second + lostAfter + sweepEvery + time.Millisecond)
	ok, p := b.arrive("k", "b", 1, now)
	require.True(t, ok)
	require.Zero(t, p.ahead)
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
		d := i.overflowSnooze(pace{ahead: 10, saturated: true})
		require.GreaterOrEqual(t, d, 100*time.Millisecond)
		require.Less(t, d, 200*time.Millisecond)
		// 999 ahead at 500/s: back in the second half of the two seconds
		// they take.
		d = i.overflowSnooze(pace{ahead: 999, rate: 500, saturated: true})
		require.GreaterOrEqual(t, d, time.Second)
		require.LessOrEqual(t, d, 2*time.Second)
		// A short backlog comes back soon, but not at once.
		d = i.overflowSnooze(pace{ahead: 1, rate: 500, saturated: true})
		require.Equal(t, minOverflowSnooze, d)
		// 999 ahead at 50/s: twenty seconds of backlog. Back in the
		// second half of them, not every few seconds: each snooze of a
		// run costs the engine an unload and a load, and a backlog sent
		// back every few seconds costs one per attempt per few seconds
		// (the chaos bench at n=20000: 54 loads per open run, 120 per
		// closed one, and the commits they queue held the key's slots).
		d = i.overflowSnooze(pace{ahead: 999, rate: 50, saturated: true})
		require.GreaterOrEqual(t, d, 10*time.Second)
		require.LessOrEqual(t, d, 20*time.Second)
		// A backlog that would take very long is looked at again anyway.
		d = i.overflowSnooze(pace{ahead: 100000, rate: 1, saturated: true})
		require.GreaterOrEqual(t, d, maxOverflowSnooze/2)
		require.LessOrEqual(t, d, maxOverflowSnooze)
		// A key that grants nothing gives no rate to judge by, and one
		// whose waiters ran out lately granted what it was asked for, not
		// what it can: look again within a few seconds.
		d = i.overflowSnooze(pace{ahead: 999, stopped: true})
		require.GreaterOrEqual(t, d, unsureOverflowSnooze/2)
		require.LessOrEqual(t, d, unsureOverflowSnooze)
		d = i.overflowSnooze(pace{ahead: 999, rate: 50})
		require.GreaterOrEqual(t, d, unsureOverflowSnooze/2)
		require.LessOrEqual(t, d, unsureOverflowSnooze)
	}
}

func TestBacklogSaturated(t *testing.T) {
	t.Parallel()
	b := newBacklog()
	now := time.Unix(1_800_000_000, 0)
	b.snoozed("k", "keep", time.Hour, now) // keeps the key's state alive
	// Two waiters at a time, granted one after the other, never both gone.
	ok, _ := b.arrive("k", "w", 2, now)
	require.True(t, ok)
	for n := range saturatedGrants {
		ok, _ = b.arrive("k", "w", 2, now)
		require.True(t, ok)
		_, p := b.arrive("k", "x", 2, now)
		require.False(t, p.saturated, "%d grants in %s", n, now.Sub(time.Unix(1_800_000_000, 0)))
		now = now.Add(saturatedAfter / saturatedGrants)
		b.left("k", true, now)
	}
	_, p := b.arrive("k", "x", 1, now)
	require.True(t, p.saturated, "waited for without a break for saturatedAfter, with saturatedGrants grants")
	require.Greater(t, p.rate, 0.0)

	// The waiters run out: the key gave what it was asked for.
	b.left("k", true, now)
	ok, _ = b.arrive("k", "w2", 1, now)
	require.True(t, ok)
	_, p = b.arrive("k", "y", 1, now.Add(time.Second))
	require.False(t, p.saturated, "the waiters ran out a second ago")
}
