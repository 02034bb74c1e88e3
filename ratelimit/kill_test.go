package ratelimit

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// The helper process is this test binary run again with these variables set.
const (
	helperPrefixEnv = "GRAFT_RATELIMIT_HELPER_PREFIX"
	helperSlotsEnv  = "GRAFT_RATELIMIT_HELPER_SLOTS"
	killTTL         = 900 * time.Millisecond
	killKey         = "registry"
)

// TestKilledHolderGivesSlotsBack starts a worker process that takes every
// slot of a key and keeps renewing them, kills it with SIGKILL (no deferred
// release runs), and checks that the slots come back after the lease TTL,
// and not before: while the process lived its renewals kept them taken.
func TestKilledHolderGivesSlotsBack(t *testing.T) {
	t.Parallel()
	c := newRedisClient(t)
	prefix := testPrefix(t, c)
	const slots = 3
	lim := StaticLimits(Limits{Concurrency: slots, LeaseTTL: killTTL})
	l := newTestRedisLimiter(t, c, RedisConfig{Limits: lim, Prefix: prefix, RecoveryWindow: -1})
	ctx := context.Background()

	helper := testenv.Spawn(t, "TestHelperHoldSlots", helperPrefixEnv+"="+prefix, helperSlotsEnv+"="+strconv.Itoa(slots))
	helper.WaitLine(t, "ready", 20*time.Second)

	// Alive and renewing for well over a TTL: its slots stay taken.
	for end := time.Now().Add(2 * killTTL); time.Now().Before(end); {
		_, err := l.Acquire(ctx, killKey, "newcomer")
		require.Equal(t, slots, requireDenied(t, err, ReasonConcurrency).InUse)
		time.Sleep(50 * time.Millisecond) // polling pace, not synchronisation
	}

	helper.Kill(t)
	killed := time.Now()
	var lease Lease
	var err error
	eventually(t, killTTL+5*time.Second, func() bool {
		lease, err = l.Acquire(ctx, killKey, "newcomer")
		return err == nil
	}, "the killed holder's slots did not come back")
	back := time.Since(killed)
	// A lease renewed every TTL/3 has between 2/3 and all of its TTL left.
	require.Greater(t, back, killTTL/2, "slots came back before the leases ran out")
	t.Logf("slots back %s after SIGKILL (lease TTL %s)", back, killTTL)
	// The helper renewed its leases at slightly different times; the others
	// follow within moments.
	for i := 1; i < slots; i++ {
		eventually(t, killTTL, func() bool {
			_, err := l.Acquire(ctx, killKey, "newcomer-"+strconv.Itoa(i))
			return err == nil
		}, "slot %d did not come back", i)
	}
	require.NoError(t, l.Release(ctx, lease))
}

// TestHelperHoldSlots is not a test: it is the worker process killed by
// TestKilledHolderGivesSlotsBack. It holds every slot and blocks.
func TestHelperHoldSlots(t *testing.T) {
	prefix := os.Getenv(helperPrefixEnv)
	if prefix == "" {
		t.Skip("helper process for TestKilledHolderGivesSlotsBack")
	}
	slots, err := strconv.Atoi(os.Getenv(helperSlotsEnv))
	require.NoError(t, err)
	c := newRedisClient(t)
	l := newTestRedisLimiter(t, c, RedisConfig{
		Limits: StaticLimits(Limits{Concurrency: slots, LeaseTTL: killTTL}), Prefix: prefix, RecoveryWindow: -1,
	})
	for i := range slots {
		_, err := Hold(context.Background(), l, killKey, "helper-"+strconv.Itoa(i), 10*time.Second)
		require.NoError(t, err)
	}
	fmt.Println("ready")
	// Block until SIGKILL. Should the parent die first, its end of stdin
	// closes and the helper leaves instead of holding the slots forever.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(1)
}
