package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// model is the specification the limiters are checked against: one key's
// behaviour written as plainly as Go allows, sharing no code with them. Times
// are microseconds.
type model struct {
	protect      bool // data-loss protection (RedisLimiter with a recovery window)
	poll         time.Duration
	present      bool // the key's state exists; false after a loss
	recoverUntil int64
	tat          float64
	leases       map[string]int64 // lease ID -> expiry
}

type modelResult struct {
	granted    bool
	reason     Reason
	retryAfter time.Duration
	inUse      int
	expires    int64
}

func newModel(protect bool, poll time.Duration) *model {
	return &model{protect: protect, poll: poll, leases: map[string]int64{}}
}

// begin is the start of every acquire and renew: notice a loss, drop expired
// leases.
func (m *model) begin(now int64, lim Limits) {
	if !m.present {
		m.present = true
		m.recoverUntil = now
		if m.protect {
			// Nothing is known of the leases held when the state was lost:
			// grant no new slot until their holders have had a LeaseTTL to
			// renew them, and assume the rate was spent to its limit.
			m.recoverUntil = now + lim.LeaseTTL.Microseconds()
			if lim.Rate > 0 {
				m.tat = math.Max(m.tat, float64(now)+float64(lim.Burst)*(1e6/lim.Rate))
			}
		}
	}
	m.expire(now)
}

func (m *model) expire(now int64) {
	for id, e := range m.leases {
		if e <= now {
			delete(m.leases, id)
		}
	}
}

func (m *model) acquire(now int64, id string, lim Limits) modelResult {
	m.begin(now, lim)
	inUse := len(m.leases)
	deny := func(r Reason, after time.Duration) modelResult {
		return modelResult{reason: r, retryAfter: after, inUse: inUse}
	}
	if _, held := m.leases[id]; held {
		m.leases[id] = now + lim.LeaseTTL.Microseconds()
		return modelResult{granted: true, inUse: inUse, expires: m.leases[id]}
	}
	if lim.Concurrency > 0 {
		if now < m.recoverUntil {
			return deny(ReasonRecovering, time.Duration(m.recoverUntil-now)*time.Microsecond)
		}
		if inUse >= lim.Concurrency {
			first := int64(math.MaxInt64)
			for _, e := range m.leases {
				first = min(first, e)
			}
			return deny(ReasonConcurrency, min(time.Duration(first-now)*time.Microsecond, m.poll))
		}
	}
	if lim.Rate > 0 {
		// GCRA: each grant pushes the theoretical arrival time one interval
		// on; a grant is allowed while that stays within burst intervals of
		// now.
		interval := 1e6 / lim.Rate
		tolerance := float64(lim.Burst) * interval
		tat := math.Max(m.tat, float64(now))
		if tat > float64(now)+tolerance {
			tat = float64(now) + tolerance
			m.tat = tat
		}
		if tat+interval-float64(now) > tolerance {
			return deny(ReasonRate, time.Duration(math.Ceil(tat+interval-tolerance-float64(now)))*time.Microsecond)
		}
		m.tat = tat + interval
	}
	m.leases[id] = now + lim.LeaseTTL.Microseconds()
	return modelResult{granted: true, inUse: inUse + 1, expires: m.leases[id]}
}

// renew extends a lease, or records it again if it ran out (or was lost)
// while its slot is still free; it returns false when the slot went to
// another caller meanwhile.
func (m *model) renew(now int64, id string, lim Limits) (int64, bool) {
	m.begin(now, lim)
	if _, held := m.leases[id]; !held && lim.Concurrency > 0 && len(m.leases) >= lim.Concurrency {
		return 0, false
	}
	m.leases[id] = now + lim.LeaseTTL.Microseconds()
	return m.leases[id], true
}

func (m *model) release(now int64, id string) {
	m.expire(now)
	delete(m.leases, id)
}

// lose is Redis losing the key's state.
func (m *model) lose() {
	*m = model{protect: m.protect, poll: m.poll, leases: map[string]int64{}}
}

// TestLimitersMatchModel runs random sequences of acquire, renew, release,
// time advances, limit changes and (for Redis) data loss against a limiter
// and the model, and requires the same answer at every step.
func TestLimitersMatchModel(t *testing.T) {
	t.Parallel()
	const poll = 50 * time.Millisecond
	kinds := []struct {
		name    string
		protect bool
		new     func(t *testing.T, src LimitsSource, clock Clock) (Limiter, func())
	}{
		{"Redis", true, func(t *testing.T, src LimitsSource, clock Clock) (Limiter, func()) {
			c := newRedisClient(t)
			l := newTestRedisLimiter(t, c, RedisConfig{Limits: src, Clock: clock, PollInterval: poll})
			return l, func() { deletePrefix(t, c, l.cfg.Prefix) }
		}},
		{"Local", false, func(t *testing.T, src LimitsSource, clock Clock) (Limiter, func()) {
			return newTestLocalLimiter(t, LocalConfig{Limits: src, Clock: clock, PollInterval: poll}), nil
		}},
	}
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			seen := map[string]int{}
			for seed := range uint64(12) {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					t.Parallel()
					clock := newFakeClock()
					var table LimitsTable
					l, lose := kind.new(t, &table, clock)
					got := runModelSequence(t, seed, l, &table, clock, newModel(kind.protect, poll), lose)
					mu.Lock()
					defer mu.Unlock()
					for k, n := range got {
						seen[k] += n
					}
				})
			}
			// Cleanup runs after the seeds: a sequence generator that never
			// reaches a case would pass vacuously.
			t.Cleanup(func() {
				if t.Failed() {
					return
				}
				t.Logf("outcomes: %v", seen)
				want := []string{"granted", "held", "denied_concurrency", "denied_rate", "released", "renewed", "restored", "refused", "expired_at_edge"}
				if kind.protect {
					want = append(want, "denied_recovering", "lost")
				}
				for _, k := range want {
					require.Positive(t, seen[k], "no sequence reached %q", k)
				}
			})
		})
	}
}

// runModelSequence runs one random sequence and returns how often each kind
// of outcome occurred.
func runModelSequence(t *testing.T, seed uint64, l Limiter, table *LimitsTable, clock *fakeClock, m *model, lose func()) map[string]int {
	seen := map[string]int{}
	ctx := context.Background()
	const key = "provider"
	rng := rand.New(rand.NewPCG(seed, 0x9a7f))
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	randomLimits := func() Limits {
		return Limits{
			Concurrency: pick(0, 1, 2, 3, 5),
			Rate:        []float64{0, 0.5, 3, 10, 1000, 7.3}[rng.IntN(6)],
			Burst:       pick(0, 1, 2, 4),
			LeaseTTL:    time.Duration(pick(1, 2, 5)) * time.Second,
		}
	}
	lim := randomLimits()
	table.Set(key, lim)
	ids := []string{"a", "b", "c", "d", "e", "f"}
	var lastHint time.Duration

	for step := range 300 {
		now := clock.Now().UnixMicro()
		id := ids[rng.IntN(len(ids))]
		eff := lim.withDefaults()
		where := func(op string) string {
			return fmt.Sprintf("seed %d step %d: %s %s at %d with %+v", seed, step, op, id, now, eff)
		}
		switch op := rng.IntN(100); {
		case op < 40:
			e, held := m.leases[id]
			held = held && e > now && m.present
			want := m.acquire(now, id, eff)
			lease, err := l.Acquire(ctx, key, id)
			if want.granted {
				if held {
					seen["held"]++
				} else {
					seen["granted"]++
				}
				require.NoError(t, err, where("acquire"))
				require.Equal(t, want.expires, lease.Expires.UnixMicro(), where("acquire"))
				break
			}
			var denied *DeniedError
			require.True(t, errors.As(err, &denied), "%s: want a denial by %s, got %v", where("acquire"), want.reason, err)
			require.Equal(t, want.reason, denied.Reason, where("acquire"))
			require.Equal(t, want.retryAfter, denied.RetryAfter, where("acquire"))
			require.Equal(t, want.inUse, denied.InUse, where("acquire"))
			seen[deniedOutcome(denied.Reason)]++
			lastHint = denied.RetryAfter
		case op < 55:
			if _, held := m.leases[id]; held {
				seen["released"]++
			}
			m.release(now, id)
			require.NoError(t, l.Release(ctx, Lease{Key: key, ID: id}), where("release"))
		case op < 65:
			m.expire(now)
			_, held := m.leases[id]
			want, ok := m.renew(now, id, eff)
			lease, err := l.Renew(ctx, Lease{Key: key, ID: id})
			switch {
			case !ok:
				seen["refused"]++
				require.ErrorIs(t, err, ErrLeaseLost, where("renew"))
			case held:
				seen["renewed"]++
			default:
				seen["restored"]++
			}
			if ok {
				require.NoError(t, err, where("renew"))
				require.Equal(t, want, lease.Expires.UnixMicro(), where("renew"))
			}
		case op < 95:
			// Mostly short steps, so that limits are met; sometimes past a
			// whole lease TTL.
			var d time.Duration
			switch rng.IntN(6) {
			case 4:
				// Exactly as hinted, to hit the edge of the rate.
				d = lastHint
			case 5:
				// Exactly to the first lease expiry, where the lease is gone.
				first := int64(math.MaxInt64)
				for _, e := range m.leases {
					first = min(first, e)
				}
				if first != math.MaxInt64 {
					d = time.Duration(first-now) * time.Microsecond
					seen["expired_at_edge"]++
				}
			case 0:
				d = time.Duration(rng.IntN(1000)) * time.Microsecond
			case 1, 2:
				d = time.Duration(rng.IntN(300)) * time.Millisecond
			default:
				d = time.Duration(rng.Int64N(int64(2 * eff.LeaseTTL)))
			}
			clock.Advance(d)
		case op < 98:
			lim = randomLimits()
			table.Set(key, lim)
		default:
			if lose != nil {
				lose()
				m.lose()
				seen["lost"]++
			}
		}
	}
	return seen
}

// TestModelSeedsAreDistinct guards the property test against a generator
// that, through a mistake, produces the same sequence for every seed.
func TestModelSeedsAreDistinct(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 0x9a7f))
		s := ""
		for range 20 {
			s += strconv.Itoa(rng.IntN(100)) + ","
		}
		require.False(t, seen[s])
		seen[s] = true
	}
}
