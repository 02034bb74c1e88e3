package tasks

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/graftdev/graft/internal/otelinst"
)

// Instrument names. Every instrument carries the source's name as
// AttrSource.
const (
	// MetricClaimed counts operations routed, by AttrKind and AttrRoute:
	// graft for rows claimed and started, legacy for operations intake
	// evaluated and left to the legacy runner.
	MetricClaimed = "graft.tasks.intake.claimed"
	// MetricEvaluations counts flag evaluations by AttrKind and AttrRule.
	MetricEvaluations = "graft.tasks.flags.evaluations"
	// MetricFailed counts failed attempts to start a row (its input does
	// not decode, its key cannot be derived): a row that keeps failing
	// counts on every pass, while the log shows it once per distinct error.
	MetricFailed = "graft.tasks.intake.failed"
	// MetricBatchDuration is the duration of a claim transaction.
	MetricBatchDuration = "graft.tasks.intake.batch.duration"
	// MetricLag is the age of the oldest pending row of the source's kinds
	// (needs Source.CreatedAt).
	MetricLag = "graft.tasks.intake.lag"

	// AttrSource is the source's name.
	AttrSource = "graft.tasks.source"
	// AttrKind is the operation's kind.
	AttrKind = "graft.tasks.kind"
	// AttrRoute is RouteGraft or RouteLegacy.
	AttrRoute = "graft.tasks.route"
	// AttrRule is the rule that decided (RuleKey, RuleDefault, ...).
	AttrRule = "graft.tasks.rule"
)

type metrics struct {
	source   attribute.KeyValue
	claimedC metric.Int64Counter
	evals    metric.Int64Counter
	failed   metric.Int64Counter
	dur      metric.Float64Histogram
	reg      metric.Registration
}

func newMetrics(mp metric.MeterProvider, source string, lag func(context.Context) (float64, bool)) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	mt := otelinst.New(mp, "github.com/graftdev/graft/tasks")
	m := &metrics{source: attribute.String(AttrSource, source)}
	m.claimedC = mt.Counter(MetricClaimed, "Operations routed, by kind and route.", "{operation}")
	m.evals = mt.Counter(MetricEvaluations, "Flag evaluations, by kind and rule.", "{evaluation}")
	m.failed = mt.Counter(MetricFailed, "Rows left pending because they cannot be started.", "{row}")
	m.dur = mt.Histogram(MetricBatchDuration, "Duration of a claim transaction.", "s")
	g := mt.FloatGauge(MetricLag, "Age of the oldest pending row.", "s")
	m.reg = mt.Callback(func(ctx context.Context, o metric.Observer) error {
		if v, ok := lag(ctx); ok {
			o.ObserveFloat64(g, v, metric.WithAttributes(m.source))
		}
		return nil
	}, g)
	return m, mt.Err()
}

func (m *metrics) claimed(ctx context.Context, kind string, r Route, n int) {
	m.claimedC.Add(ctx, int64(n), metric.WithAttributes(m.source, attribute.String(AttrKind, kind), attribute.String(AttrRoute, string(r))))
}

func (m *metrics) evaluated(ctx context.Context, kind, rule string, n int) {
	m.evals.Add(ctx, int64(n), metric.WithAttributes(m.source, attribute.String(AttrKind, kind), attribute.String(AttrRule, rule)))
}

func (m *metrics) batch(ctx context.Context, d time.Duration, failed int) {
	m.dur.Record(ctx, d.Seconds(), metric.WithAttributes(m.source))
	if failed > 0 {
		m.failed.Add(ctx, int64(failed), metric.WithAttributes(m.source))
	}
}

func (m *metrics) close() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}
