package ratelimit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RecentWindow is the window KeyInfo.RecentRate averages over.
const RecentWindow = 10 * time.Second

// Inspector reads what the limiters sharing a prefix are doing, and sets
// the operators' overrides they apply. It needs no limiter of its own: the
// operations server uses one beside workers that hold the limiters.
type Inspector struct {
	client redis.UniversalClient
	prefix string
}

// NewInspector returns an Inspector of the limiters using prefix (""
// means DefaultPrefix) on client's Redis.
func NewInspector(client redis.UniversalClient, prefix string) (*Inspector, error) {
	if client == nil {
		return nil, errors.New("ratelimit: NewInspector: nil client")
	}
	return &Inspector{client: client, prefix: cmp.Or(prefix, DefaultPrefix)}, nil
}

// KeyInfo is one key as the limiters sharing a prefix see it.
type KeyInfo struct {
	Key string
	// Configured is the limits the workers' Limits source gives the key,
	// as the most recent report says; nil when no limiter reported the key
	// in the last two minutes.
	Configured *Override
	// Override is the operators' override, if any. The limits in force are
	// Override when set, else Configured.
	Override *Override
	// InFlight is the number of leases held now.
	InFlight int
	// RecentRate is the leases granted per second over RecentWindow, as the
	// limiters reported them (they report about once a RefreshInterval).
	RecentRate float64
	// Waiters is the number of calls the limiters' processes have queued for
	// the key (throttled), as they last reported.
	Waiters int
	// ReportedAt is when a limiter last reported the key (zero: never).
	ReportedAt time.Time
}

// Effective returns the limits in force: the override, else the configured
// ones; nil if neither is known.
func (k KeyInfo) Effective() *Override { return cmp.Or(k.Override, k.Configured) }

// Keys lists the keys under the prefix that a limiter reported in the last
// two minutes (a limiter reports every key it used in the last minute, and
// every key it holds a lease of, since it renews them) or that have an
// override, sorted. It reads a few hashes, never scans the keyspace.
func (in *Inspector) Keys(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	ov, err := in.client.HKeys(ctx, overridesKey(in.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: list keys: %w", err)
	}
	for _, k := range ov {
		seen[k] = true
	}
	reports, err := in.reports(ctx)
	if err != nil {
		return nil, err
	}
	for k := range reports {
		seen[k] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// reports merges the limiters' live reports per key: the latest limits,
// the waiters summed over limiters.
func (in *Inspector) reports(ctx context.Context) (map[string]*reportedKey, error) {
	out := map[string]*reportedKey{}
	instances, err := in.client.ZRangeByScore(ctx, reportersKey(in.prefix), &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: read reports: %w", err)
	}
	for _, instance := range instances {
		m, err := in.client.HGetAll(ctx, reportKey(in.prefix, instance)).Result()
		if err != nil {
			return nil, fmt.Errorf("ratelimit: read reports: %w", err)
		}
		for k, v := range m {
			var r reportedKey
			if json.Unmarshal([]byte(v), &r) != nil {
				continue
			}
			if time.Since(r.At) > reportFresh {
				r.Waiters = 0
			}
			cur := out[k]
			if cur == nil {
				out[k] = &r
				continue
			}
			cur.Waiters += r.Waiters
			if r.At.After(cur.At) {
				cur.Limits, cur.At = r.Limits, r.At
			}
		}
	}
	return out, nil
}

// InFlight returns the number of leases of key held now (by Redis's clock).
func (in *Inspector) InFlight(ctx context.Context, key string) (int, error) {
	now, err := in.client.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: in flight %q: %w", key, err)
	}
	n, err := in.client.ZCount(ctx, stateKey(in.prefix, key), fmt.Sprintf("(%d", now.UnixMicro()), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: in flight %q: %w", key, err)
	}
	return int(n), nil
}

// RecentRate returns the leases of key granted per second over the last
// RecentWindow, as the limiters reported them.
func (in *Inspector) RecentRate(ctx context.Context, key string) (float64, error) {
	now, err := in.client.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: recent rate %q: %w", key, err)
	}
	secs := int64(RecentWindow / time.Second)
	names := make([]string, 0, secs)
	for s := now.Unix() - secs + 1; s <= now.Unix(); s++ {
		names = append(names, grantsKey(in.prefix, key, s))
	}
	vals, err := in.client.MGet(ctx, names...).Result()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: recent rate %q: %w", key, err)
	}
	var total int64
	for _, v := range vals {
		if s, ok := v.(string); ok {
			var n int64
			_, _ = fmt.Sscan(s, &n)
			total += n
		}
	}
	return float64(total) / float64(secs), nil
}

// Waiters returns the number of calls queued for key in the limiters'
// processes, as they last reported.
func (in *Inspector) Waiters(ctx context.Context, key string) (int, error) {
	r, err := in.reports(ctx)
	if err != nil {
		return 0, err
	}
	if k := r[key]; k != nil {
		return k.Waiters, nil
	}
	return 0, nil
}

// Inspect returns every key under the prefix (see Keys) with its limits,
// leases in flight, recent rate and waiters.
func (in *Inspector) Inspect(ctx context.Context) ([]KeyInfo, error) {
	keys, err := in.Keys(ctx)
	if err != nil {
		return nil, err
	}
	reports, err := in.reports(ctx)
	if err != nil {
		return nil, err
	}
	overrides, err := in.overrides(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(keys))
	for _, k := range keys {
		info, err := in.info(ctx, k, reports, overrides)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Key returns one key's KeyInfo.
func (in *Inspector) Key(ctx context.Context, key string) (KeyInfo, error) {
	reports, err := in.reports(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	overrides, err := in.overrides(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	return in.info(ctx, key, reports, overrides)
}

func (in *Inspector) info(ctx context.Context, key string, reports map[string]*reportedKey, overrides map[string]Override) (KeyInfo, error) {
	info := KeyInfo{Key: key}
	if r := reports[key]; r != nil {
		l := r.Limits
		info.Configured, info.Waiters, info.ReportedAt = &l, r.Waiters, r.At
	}
	if o, ok := overrides[key]; ok {
		info.Override = &o
	}
	var err error
	if info.InFlight, err = in.InFlight(ctx, key); err != nil {
		return info, err
	}
	info.RecentRate, err = in.RecentRate(ctx, key)
	return info, err
}

func (in *Inspector) overrides(ctx context.Context) (map[string]Override, error) {
	m, err := in.client.HGetAll(ctx, overridesKey(in.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: read overrides: %w", err)
	}
	out := make(map[string]Override, len(m))
	for k, v := range m {
		var o Override
		if err := json.Unmarshal([]byte(v), &o); err == nil {
			out[k] = o
		}
	}
	return out, nil
}

// SetOverride makes every limiter sharing the prefix hold key to o (each
// picks it up at its next refresh, within about its RefreshInterval)
// instead of what its Limits source says, until ClearOverride. A limiter
// applies an override only to keys its source gives limits for.
func (in *Inspector) SetOverride(ctx context.Context, key string, o Override) error {
	if key == "" {
		return errors.New("ratelimit: SetOverride: empty key")
	}
	if err := o.Validate(); err != nil {
		return err
	}
	b, _ := json.Marshal(o)
	if err := in.client.HSet(ctx, overridesKey(in.prefix), key, string(b)).Err(); err != nil {
		return fmt.Errorf("ratelimit: set override %q: %w", key, err)
	}
	return nil
}

// ClearOverride removes key's override: the limiters' configured limits
// apply again.
func (in *Inspector) ClearOverride(ctx context.Context, key string) error {
	if err := in.client.HDel(ctx, overridesKey(in.prefix), key).Err(); err != nil {
		return fmt.Errorf("ratelimit: clear override %q: %w", key, err)
	}
	return nil
}
