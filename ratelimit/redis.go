package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
)

// RedisConfig configures a RedisLimiter. The zero value of each field other
// than Limits means its documented default.
type RedisConfig struct {
	// Limits gives each key's limits. It is consulted on every call, so
	// changes take effect without a restart. Required.
	Limits LimitsSource
	// Prefix starts every Redis key the limiter writes: a key's state lives
	// at "{Prefix:key}:state". Limiters that must share limits must share the
	// prefix. Default "graft:ratelimit".
	Prefix string
	// RecoveryWindow is how long, after the limiter finds a key's state
	// missing (Redis restarted empty, or was flushed), it grants no new
	// concurrency slots for that key, so that leases held by live workers are
	// recorded again by their renewals before new ones are counted. Zero means
	// the key's LeaseTTL, the shortest window that is always safe: a live
	// holder renews within one TTL. Negative disables the protection (the
	// window and the spent bucket after a loss); do that only if Redis never
	// loses data, or if briefly exceeding the limit is acceptable. A key's
	// first use is not a loss and waits for nothing, unless the prefix has
	// never been used on this Redis (or on a Cluster): see the package doc.
	RecoveryWindow time.Duration
	// MarkerTTL is how long a key's state (with its epoch marker) outlives
	// the key's last grant or renewal. A key idle for longer is treated as
	// new. Default 7 days.
	MarkerTTL time.Duration
	// PollInterval is the retry-after given with a concurrency denial when no
	// lease expires sooner: this process cannot see releases by other
	// processes, so waiters look again this often. Default 20ms.
	PollInterval time.Duration
	// Clock, if set, supplies the time the scripts use instead of Redis's own
	// TIME. Meant for tests that move time by hand; see the package doc for
	// why Redis time is the default.
	Clock Clock
	// MeterProvider receives the limiter's metrics. Default: the otel global.
	MeterProvider metric.MeterProvider
	// RefreshInterval is how often the limiter reads the operators'
	// overrides (Inspector.SetOverride), which then replace the Limits
	// source's Concurrency, Rate and Burst for their keys, and reports its
	// keys for Inspector (the limits it applies, grants, waiters). The
	// refresh is one pipelined round trip made by the first call that finds
	// the last one older than the interval, so an override reaches every
	// active limiter within about the interval. Default
	// DefaultRefreshInterval; negative turns overrides and reports off.
	RefreshInterval time.Duration
}

// Defaults for RedisConfig.
const (
	DefaultPrefix       = "graft:ratelimit"
	DefaultMarkerTTL    = 7 * 24 * time.Hour
	DefaultPollInterval = 20 * time.Millisecond
)

// Validate reports the first field that makes no sense, by name.
func (c RedisConfig) Validate() error {
	switch {
	case c.Limits == nil:
		return errors.New("ratelimit: RedisConfig.Limits is required")
	case c.MarkerTTL < 0:
		return fmt.Errorf("ratelimit: RedisConfig.MarkerTTL must be >= 0, got %s", c.MarkerTTL)
	case c.MarkerTTL > 0 && c.MarkerTTL < time.Minute:
		// A marker that expires under a live lease triggers a needless
		// recovery window.
		return fmt.Errorf("ratelimit: RedisConfig.MarkerTTL must be at least 1m, got %s", c.MarkerTTL)
	case c.PollInterval < 0:
		return fmt.Errorf("ratelimit: RedisConfig.PollInterval must be >= 0, got %s", c.PollInterval)
	}
	return nil
}

func (c RedisConfig) withDefaults() RedisConfig {
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.MarkerTTL = cmp.Or(c.MarkerTTL, DefaultMarkerTTL)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, DefaultRefreshInterval)
	return c
}

// RedisLimiter holds keys to their limits across every process that shares
// its Redis and prefix. Each call is one round trip running one atomic script.
type RedisLimiter struct {
	client  redis.UniversalClient
	sharded bool // a Cluster or Ring: scripts may touch one slot only
	cfg     RedisConfig
	scripts scripts
	metrics *metrics
	waits   waitQueues
	rep     *reporter
	closed  closeSignal
}

var _ Limiter = (*RedisLimiter)(nil)

// NewRedisLimiter returns a limiter that keeps its state in Redis through
// client, which may be a single node, a Sentinel-managed primary or a Cluster.
// Run that Redis with maxmemory-policy noeviction: evicting a limiter key
// loses leases without the loss being detected.
func NewRedisLimiter(client redis.UniversalClient, cfg RedisConfig) (*RedisLimiter, error) {
	if client == nil {
		return nil, errors.New("ratelimit: NewRedisLimiter: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: metrics: %w", err)
	}
	var sharded bool
	switch client.(type) {
	case *redis.ClusterClient, *redis.Ring:
		sharded = true
	}
	r := &RedisLimiter{client: client, sharded: sharded, cfg: cfg.withDefaults(), scripts: newScripts(), metrics: m, closed: newCloseSignal()}
	r.rep = newReporter(client, r.cfg.Prefix, r.cfg.RefreshInterval, &r.waits)
	return r, nil
}

// Close unregisters the limiter's metrics callback and stops renewing the
// leases Hold keeps through it: each such Held is lost (its Context is
// cancelled with a cause wrapping ErrLeaseLost), since nothing renews it
// any more. It does not close the Redis client, which the caller owns.
func (r *RedisLimiter) Close() error {
	r.closed.close()
	return r.metrics.close()
}

func (r *RedisLimiter) closing() <-chan struct{} { return r.closed.ch }

// Acquire implements Limiter.
func (r *RedisLimiter) Acquire(ctx context.Context, key, leaseID string) (Lease, error) {
	if err := checkArgs(key, leaseID); err != nil {
		return Lease{}, err
	}
	lim, err := limitsFor(r.cfg.Limits, key)
	if err != nil {
		r.metrics.acquired(ctx, key, "error")
		return Lease{}, err
	}
	lim = r.rep.limits(ctx, key, lim)
	res, err := r.scripts.acquire.Run(ctx, r.client, r.keys(key),
		r.now(), leaseID, lim.Concurrency, formatRate(lim.Rate), lim.Burst,
		lim.LeaseTTL.Microseconds(), r.recoveryMicros(lim), r.cfg.MarkerTTL.Milliseconds(),
	).Int64Slice()
	if err != nil {
		r.metrics.acquired(ctx, key, "error")
		return Lease{}, r.storeErr(ctx, "acquire", key, err)
	}
	if len(res) != 6 {
		return Lease{}, r.storeErr(ctx, "acquire", key, fmt.Errorf("acquire script returned %d values", len(res)))
	}
	status, reason, t, inUse, expired := res[0], res[1], res[2], int(res[3]), res[4]
	r.metrics.expiredLeases(ctx, key, expired)
	r.metrics.gauge(key, inUse, lim.Concurrency)
	switch status {
	case statusGranted, statusHeld:
		outcome := "granted"
		if status == statusHeld {
			outcome = "held"
		} else {
			r.rep.granted(key)
		}
		r.metrics.acquired(ctx, key, outcome)
		return Lease{Key: key, ID: leaseID, Expires: time.UnixMicro(t), TTL: lim.LeaseTTL}, nil
	}
	denied := &DeniedError{Key: key, RetryAfter: time.Duration(t) * time.Microsecond, InUse: inUse, Limits: lim}
	switch reason {
	case reasonConcurrency:
		denied.Reason = ReasonConcurrency
		denied.RetryAfter = min(denied.RetryAfter, r.cfg.PollInterval)
	case reasonRate:
		denied.Reason = ReasonRate
	case reasonRecovering:
		denied.Reason = ReasonRecovering
	default:
		return Lease{}, r.storeErr(ctx, "acquire", key, fmt.Errorf("acquire script returned reason %d", reason))
	}
	r.metrics.acquired(ctx, key, deniedOutcome(denied.Reason))
	return Lease{}, denied
}

// Renew implements Limiter.
func (r *RedisLimiter) Renew(ctx context.Context, lease Lease) (Lease, error) {
	if err := checkArgs(lease.Key, lease.ID); err != nil {
		return Lease{}, err
	}
	lim, err := limitsFor(r.cfg.Limits, lease.Key)
	if err != nil {
		return Lease{}, err
	}
	lim = r.rep.limits(ctx, lease.Key, lim)
	res, err := r.scripts.renew.Run(ctx, r.client, r.keys(lease.Key),
		r.now(), lease.ID, lim.Concurrency, formatRate(lim.Rate), lim.Burst,
		lim.LeaseTTL.Microseconds(), r.recoveryMicros(lim), r.cfg.MarkerTTL.Milliseconds(),
	).Int64Slice()
	if err != nil {
		return Lease{}, r.storeErr(ctx, "renew", lease.Key, err)
	}
	if len(res) != 5 {
		return Lease{}, r.storeErr(ctx, "renew", lease.Key, fmt.Errorf("renew script returned %d values", len(res)))
	}
	r.metrics.expiredLeases(ctx, lease.Key, res[3])
	r.metrics.gauge(lease.Key, int(res[2]), lim.Concurrency)
	switch res[0] {
	case renewRestored:
		r.metrics.restoredLease(ctx, lease.Key)
	case renewRefused:
		return Lease{}, leaseLost(lease, int(res[2]), lim)
	}
	lease.Expires = time.UnixMicro(res[1])
	lease.TTL = lim.LeaseTTL
	return lease, nil
}

// Release implements Limiter.
func (r *RedisLimiter) Release(ctx context.Context, lease Lease) error {
	if err := checkArgs(lease.Key, lease.ID); err != nil {
		return err
	}
	r.rep.touched(ctx)
	keys := []string{stateKey(r.cfg.Prefix, lease.Key)}
	res, err := r.scripts.release.Run(ctx, r.client, keys, r.now(), lease.ID).Int64Slice()
	if err != nil {
		return r.storeErr(ctx, "release", lease.Key, err)
	}
	if len(res) != 3 {
		return r.storeErr(ctx, "release", lease.Key, fmt.Errorf("release script returned %d values", len(res)))
	}
	r.metrics.expiredLeases(ctx, lease.Key, res[2])
	r.metrics.gauge(lease.Key, int(res[1]), -1)
	if res[0] == 1 {
		r.waits.released(lease.Key)
	}
	return nil
}

// keys are the Redis keys the acquire and renew scripts read for key: its
// state and, except on a sharded Redis, the prefix's instance marker, which
// tells a new key from a lost one.
func (r *RedisLimiter) keys(key string) []string {
	if r.sharded {
		return []string{stateKey(r.cfg.Prefix, key)}
	}
	return []string{stateKey(r.cfg.Prefix, key), instanceKey(r.cfg.Prefix)}
}

// now is the scripts' time argument: empty means Redis TIME.
func (r *RedisLimiter) now() string {
	if r.cfg.Clock == nil {
		return ""
	}
	return strconv.FormatInt(r.cfg.Clock.Now().UnixMicro(), 10)
}

// recoveryMicros is the scripts' recovery window; -1 turns protection off.
func (r *RedisLimiter) recoveryMicros(lim Limits) int64 {
	switch {
	case r.cfg.RecoveryWindow < 0:
		return -1
	case r.cfg.RecoveryWindow == 0:
		return lim.LeaseTTL.Microseconds()
	}
	return r.cfg.RecoveryWindow.Microseconds()
}

// storeErr turns a Redis failure into an *UnavailableError, except that the
// caller's own cancellation is returned as such.
func (r *RedisLimiter) storeErr(ctx context.Context, op, key string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return fmt.Errorf("ratelimit: %s %q: %w", op, key, err)
	}
	r.metrics.storeError(context.WithoutCancel(ctx), key, op)
	return &UnavailableError{Op: op, Key: key, Err: err}
}

func (r *RedisLimiter) waitQueues() *waitQueues { return &r.waits }

func (r *RedisLimiter) observeWait(ctx context.Context, key string, d time.Duration, outcome string) {
	r.metrics.waited(ctx, key, d, outcome)
}

// formatRate writes the rate so that Lua's tonumber reads back the same
// float64: the shortest representation that round-trips.
func formatRate(rate float64) string {
	return strconv.FormatFloat(rate, 'g', -1, 64)
}
