package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRefreshInterval is how often a RedisLimiter reads the operators'
// overrides and reports its keys, when RedisConfig.RefreshInterval is zero.
const DefaultRefreshInterval = time.Second

// Override replaces a key's Concurrency, Rate and Burst at run time, for
// every limiter sharing the prefix (see Inspector.SetOverride). The key's
// LeaseTTL stays as configured.
type Override struct {
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate"`
	Burst       int     `json:"burst"`
}

// apply returns l with o's limits.
func (o Override) apply(l Limits) Limits {
	l.Concurrency, l.Rate, l.Burst = o.Concurrency, o.Rate, o.Burst
	return l
}

// Validate reports the first field that makes no sense, by name.
func (o Override) Validate() error { return o.apply(Limits{}).Validate() }

// Redis keys of the overrides and reports, beside the keys' states.
func overridesKey(prefix string) string { return "{" + prefix + "}:overrides" }
func reportKey(prefix, instance string) string {
	return "{" + prefix + "}:report:" + instance
}

// reportersKey is a sorted set of the limiters reporting under a prefix,
// each scored by when its report expires (unix milliseconds), so readers
// find the reports without scanning the keyspace.
func reportersKey(prefix string) string { return "{" + prefix + "}:reporters" }
func grantsKey(prefix, key string, sec int64) string {
	return "{" + prefix + ":" + key + "}:grants:" + strconv.FormatInt(sec, 10)
}

// Reports and grant counters outlive the last refresh by this much, so a
// limiter that stopped (or a process that died) drops out of the picture.
const (
	reportTTL = 2 * time.Minute
	// Waiters older than this are no longer counted: the process stopped
	// reporting (it has no call left, or it died).
	reportFresh = 10 * time.Second
	grantsTTL   = time.Minute
	// A key unused this long is no longer reported by a limiter.
	reportIdle = time.Minute
)

// reportedKey is what one limiter reports about one key.
type reportedKey struct {
	Limits  Override  `json:"limits"`
	Waiters int       `json:"waiters"`
	At      time.Time `json:"at"`
}

// keyActivity is what a limiter has seen of a key since its last refresh.
type keyActivity struct {
	grants atomic.Int64
	limits atomic.Pointer[Limits]
	used   atomic.Int64 // unix nanoseconds of the last use
}

// reporter reads the overrides and reports the limiter's keys once per
// interval, on the call path (no goroutine): the first call that finds the
// last refresh older than the interval does it, in one pipelined round
// trip, while concurrent calls go on with the overrides they have.
type reporter struct {
	client   redis.UniversalClient
	prefix   string
	instance string
	interval time.Duration // <= 0: off
	waits    *waitQueues

	busy      atomic.Bool
	last      atomic.Int64 // unix nanoseconds of the last refresh attempt
	overrides atomic.Pointer[map[string]Override]
	keys      sync.Map // key -> *keyActivity
}

func newReporter(client redis.UniversalClient, prefix string, interval time.Duration, waits *waitQueues) *reporter {
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := &reporter{client: client, prefix: prefix, instance: hex.EncodeToString(b[:]), interval: interval, waits: waits}
	r.overrides.Store(&map[string]Override{})
	return r
}

// limits applies key's override, if any, to its configured limits, records
// the key's use and refreshes when due.
func (r *reporter) limits(ctx context.Context, key string, lim Limits) Limits {
	if r.interval <= 0 {
		return lim
	}
	a := r.activity(key)
	if cur := a.limits.Load(); cur == nil || *cur != lim {
		configured := lim
		a.limits.Store(&configured)
	}
	r.maybeRefresh(ctx)
	if o, ok := (*r.overrides.Load())[key]; ok {
		return o.apply(lim).withDefaults()
	}
	return lim
}

func (r *reporter) activity(key string) *keyActivity {
	if v, ok := r.keys.Load(key); ok {
		a := v.(*keyActivity)
		a.used.Store(time.Now().UnixNano())
		return a
	}
	a := &keyActivity{}
	a.used.Store(time.Now().UnixNano())
	v, _ := r.keys.LoadOrStore(key, a)
	return v.(*keyActivity)
}

// granted counts a grant for key.
func (r *reporter) granted(key string) {
	if r.interval <= 0 {
		return
	}
	r.activity(key).grants.Add(1)
}

// touched refreshes when due, for calls that do not read limits (Release).
func (r *reporter) touched(ctx context.Context) {
	if r.interval > 0 {
		r.maybeRefresh(ctx)
	}
}

func (r *reporter) maybeRefresh(ctx context.Context) {
	now := time.Now()
	if now.UnixNano()-r.last.Load() < int64(r.interval) || !r.busy.CompareAndSwap(false, true) {
		return
	}
	defer r.busy.Store(false)
	r.last.Store(now.UnixNano())
	_ = r.refresh(ctx, now)
}

// refresh reads the overrides and writes this limiter's report in one
// round trip. A failure keeps the overrides last read; the grants counted
// are given back to the next refresh.
func (r *reporter) refresh(ctx context.Context, now time.Time) error {
	waiting := r.waits.waitingByKey()
	report := map[string]any{}
	type flushed struct {
		a *keyActivity
		n int64
	}
	var grants []flushed
	var gone []string
	pipe := r.client.Pipeline()
	ov := pipe.HGetAll(ctx, overridesKey(r.prefix))
	sec := now.Unix()
	r.keys.Range(func(k, v any) bool {
		key, a := k.(string), v.(*keyActivity)
		if now.UnixNano()-a.used.Load() > int64(reportIdle) && waiting[key] == 0 {
			r.keys.Delete(key)
			gone = append(gone, key)
			return true
		}
		rk := reportedKey{Waiters: waiting[key], At: now.UTC()}
		if l := a.limits.Load(); l != nil {
			rk.Limits = Override{Concurrency: l.Concurrency, Rate: l.Rate, Burst: l.Burst}
		}
		b, _ := json.Marshal(rk)
		report[key] = string(b)
		if n := a.grants.Swap(0); n > 0 {
			grants = append(grants, flushed{a, n})
			gk := grantsKey(r.prefix, key, sec)
			pipe.IncrBy(ctx, gk, n)
			pipe.Expire(ctx, gk, grantsTTL)
		}
		return true
	})
	rep := reportKey(r.prefix, r.instance)
	if len(gone) > 0 {
		pipe.HDel(ctx, rep, gone...)
	}
	if len(report) > 0 {
		pipe.HSet(ctx, rep, report)
		pipe.PExpire(ctx, rep, reportTTL)
		rs := reportersKey(r.prefix)
		pipe.ZAdd(ctx, rs, redis.Z{Score: float64(now.Add(reportTTL).UnixMilli()), Member: r.instance})
		pipe.ZRemRangeByScore(ctx, rs, "-inf", fmt.Sprintf("(%d", now.UnixMilli()))
		pipe.PExpire(ctx, rs, reportTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		for _, g := range grants {
			g.a.grants.Add(g.n)
		}
		return err
	}
	m := make(map[string]Override, len(ov.Val()))
	for k, v := range ov.Val() {
		var o Override
		if json.Unmarshal([]byte(v), &o) == nil && o.Validate() == nil {
			m[k] = o
		}
	}
	r.overrides.Store(&m)
	return nil
}
