package graftsync

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/internal/otelinst"
)

// Instrument names. Every instrument carries the mapping's table as
// AttrTable.
const (
	// MetricRowsWritten counts legacy rows written (updated or created).
	MetricRowsWritten = "graft.sync.rows.written"
	// MetricRowsMissing counts changes whose legacy row did not exist.
	MetricRowsMissing = "graft.sync.rows.missing"
	// MetricStale counts changes dropped because a newer one was applied.
	MetricStale = "graft.sync.changes.stale"
	// MetricQueued counts changes a same-database mirror put in the outbox
	// because the legacy table refused them (or a change of their row was
	// already waiting there).
	MetricQueued = "graft.sync.changes.queued"
	// MetricRelayDelivered counts outbox changes the relay delivered.
	MetricRelayDelivered = "graft.sync.relay.delivered"
	// MetricRelayErrors counts failed relay rounds and row deliveries.
	MetricRelayErrors = "graft.sync.relay.errors"
	// MetricRelayDelay is the time from a change's checkpoint to its
	// delivery.
	MetricRelayDelay = "graft.sync.relay.delay"
	// MetricRelayLag is the age of the oldest undelivered change (0 when
	// the outbox is empty).
	MetricRelayLag = "graft.sync.relay.lag"
	// MetricRequests counts legacy-side requests by AttrRequest and
	// AttrOutcome (done, not_running, error).
	MetricRequests = "graft.sync.requests"

	// AttrTable is the mapping's table, "schema.table".
	AttrTable = "graft.sync.table"
	// AttrRequest is the request value.
	AttrRequest = "graft.sync.request"
	// AttrOutcome is a request's outcome.
	AttrOutcome = "graft.sync.outcome"
)

type metrics struct {
	table     attribute.KeyValue
	attrs     metric.MeasurementOption
	written   metric.Int64Counter
	missing   metric.Int64Counter
	stale     metric.Int64Counter
	queuedC   metric.Int64Counter
	delivered metric.Int64Counter
	errors    metric.Int64Counter
	delay     metric.Float64Histogram
	requests  metric.Int64Counter
	lag       atomic.Uint64 // float64 bits
	reg       metric.Registration
}

func newMetrics(mp metric.MeterProvider, mr *Mirror) (*metrics, error) {
	meter := otelinst.New(mp, "github.com/graftdev/graft/sync")
	m := &metrics{table: attribute.String(AttrTable, mr.table.String())}
	m.attrs = metric.WithAttributes(m.table)
	m.written = meter.Counter(MetricRowsWritten, "Legacy rows written (updated or created).", "{row}")
	m.missing = meter.Counter(MetricRowsMissing, "Changes whose legacy row did not exist.", "{change}")
	m.stale = meter.Counter(MetricStale, "Changes dropped because a newer one was already applied.", "{change}")
	m.queuedC = meter.Counter(MetricQueued, "Changes put in the outbox because the legacy table refused them.", "{change}")
	m.delivered = meter.Counter(MetricRelayDelivered, "Outbox changes delivered to the legacy database.", "{change}")
	m.errors = meter.Counter(MetricRelayErrors, "Failed relay rounds and row deliveries.", "{error}")
	m.requests = meter.Counter(MetricRequests, "Legacy-side requests acted on, by outcome.", "{request}")
	m.delay = meter.Histogram(MetricRelayDelay, "Time from a change's checkpoint to its delivery.", "s")
	lag := meter.FloatGauge(MetricRelayLag, "Age of the oldest change not yet delivered to the legacy database.", "s")
	m.reg = meter.Callback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(lag, math.Float64frombits(m.lag.Load()), m.attrs)
		return nil
	}, lag)
	if err := meter.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) close() error { return m.reg.Unregister() }

func (m *metrics) wrote(ctx context.Context, written, stale, missing int64) {
	if written > 0 {
		m.written.Add(ctx, written, m.attrs)
	}
	if stale > 0 {
		m.stale.Add(ctx, stale, m.attrs)
	}
	if missing > 0 {
		m.missing.Add(ctx, missing, m.attrs)
	}
}

func (m *metrics) delivery(ctx context.Context, d time.Duration) {
	m.delivered.Add(ctx, 1, m.attrs)
	m.delay.Record(ctx, d.Seconds(), m.attrs)
}

func (m *metrics) relayError(ctx context.Context) { m.errors.Add(ctx, 1, m.attrs) }

func (m *metrics) queued(ctx context.Context, n int64) {
	if n > 0 {
		m.queuedC.Add(ctx, n, m.attrs)
	}
}

func (m *metrics) setLag(seconds float64) { m.lag.Store(math.Float64bits(max(seconds, 0))) }

func (m *metrics) request(ctx context.Context, value, outcome string) {
	m.requests.Add(ctx, 1, metric.WithAttributes(m.table, attribute.String(AttrRequest, value), attribute.String(AttrOutcome, outcome)))
}
