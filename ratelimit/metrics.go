package ratelimit

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/internal/otelinst"
)

// Instrument names. Every instrument carries the limiter key as the
// attribute AttrKey, so keep keys few (providers, or providers and accounts)
// or the metrics backend will pay for the cardinality.
const (
	MetricSlotsInUse   = "graft.ratelimit.slots.in_use"
	MetricSlotsLimit   = "graft.ratelimit.slots.limit"
	MetricAcquisitions = "graft.ratelimit.acquisitions"
	MetricWaitDuration = "graft.ratelimit.wait.duration"
	MetricSnoozes      = "graft.ratelimit.snoozes"
	MetricExpired      = "graft.ratelimit.leases.expired"
	MetricRestored     = "graft.ratelimit.leases.restored"
	MetricStoreErrors  = "graft.ratelimit.redis.errors"

	// AttrKey is the limiter key.
	AttrKey = "graft.ratelimit.key"
	// AttrOutcome is an acquisition's outcome: granted, held (same lease ID
	// again), denied_concurrency, denied_rate, denied_recovering, error; or a
	// wait's outcome: granted, snoozed, canceled.
	AttrOutcome = "graft.ratelimit.outcome"
	// AttrOp is the failed operation for MetricStoreErrors.
	AttrOp = "graft.ratelimit.op"
)

// metrics records what a limiter does. The two gauges report the last value
// this process saw for each key: a gauge callback must not do I/O, and every
// acquire, renew and release returns the current count anyway.
type metrics struct {
	acquisitions metric.Int64Counter
	wait         metric.Float64Histogram
	snoozes      metric.Int64Counter
	expired      metric.Int64Counter
	restored     metric.Int64Counter
	storeErrors  metric.Int64Counter
	reg          metric.Registration

	mu   sync.Mutex
	seen map[string]keyGauge
}

type keyGauge struct {
	inUse, limit int64
	attrs        metric.MeasurementOption
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	meter := otelinst.New(mp, "github.com/graftdev/graft/ratelimit")
	m := &metrics{seen: make(map[string]keyGauge)}
	m.acquisitions = meter.Counter(MetricAcquisitions, "Acquire calls by outcome.", "{call}")
	m.wait = meter.Histogram(MetricWaitDuration, "Time Wait and Hold spent before a lease or a snooze.", "s")
	m.snoozes = meter.Counter(MetricSnoozes, "Waits that gave up and returned an engine.SnoozeError.", "{wait}")
	m.expired = meter.Counter(MetricExpired, "Leases that ran out without release (their holder died or stalled).", "{lease}")
	m.restored = meter.Counter(MetricRestored, "Renewals that found their lease missing and recorded it again.", "{lease}")
	m.storeErrors = meter.Counter(MetricStoreErrors, "Calls that failed because the store (Redis) failed; nothing was granted.", "{error}")
	inUse := meter.IntGauge(MetricSlotsInUse, "Leases held for the key, as last seen by this process.", "{lease}")
	limit := meter.IntGauge(MetricSlotsLimit, "The key's concurrency limit (0 = none), as last seen by this process.", "{lease}")
	m.reg = meter.Callback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, g := range m.seen {
			o.ObserveInt64(inUse, g.inUse, g.attrs)
			o.ObserveInt64(limit, g.limit, g.attrs)
		}
		return nil
	}, inUse, limit)
	if err := meter.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) close() error { return m.reg.Unregister() }

func keyAttr(key string) attribute.KeyValue { return attribute.String(AttrKey, key) }

// gauge remembers the latest count for key; limit < 0 leaves the limit as is.
func (m *metrics) gauge(key string, inUse, limit int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.seen[key]
	if !ok {
		g.attrs = metric.WithAttributes(keyAttr(key))
	}
	g.inUse = int64(inUse)
	if limit >= 0 {
		g.limit = int64(limit)
	}
	m.seen[key] = g
}

func (m *metrics) acquired(ctx context.Context, key, outcome string) {
	m.acquisitions.Add(ctx, 1, metric.WithAttributes(keyAttr(key), attribute.String(AttrOutcome, outcome)))
}

func (m *metrics) expiredLeases(ctx context.Context, key string, n int64) {
	if n > 0 {
		m.expired.Add(ctx, n, metric.WithAttributes(keyAttr(key)))
	}
}

func (m *metrics) restoredLease(ctx context.Context, key string) {
	m.restored.Add(ctx, 1, metric.WithAttributes(keyAttr(key)))
}

func (m *metrics) storeError(ctx context.Context, key, op string) {
	m.storeErrors.Add(ctx, 1, metric.WithAttributes(keyAttr(key), attribute.String(AttrOp, op)))
}

func (m *metrics) waited(ctx context.Context, key string, d time.Duration, outcome string) {
	m.wait.Record(ctx, d.Seconds(), metric.WithAttributes(keyAttr(key), attribute.String(AttrOutcome, outcome)))
	if outcome == "snoozed" {
		m.snoozes.Add(ctx, 1, metric.WithAttributes(keyAttr(key)))
	}
}

// deniedOutcome names a denial for AttrOutcome.
func deniedOutcome(r Reason) string { return "denied_" + string(r) }
