package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/graftdev/graft/tasks"
)

// metricPoints reads the instruments through reader: for each instrument,
// its data points' values keyed by their attributes (without the source).
func metricPoints(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]map[string]float64{}
	key := func(set attribute.Set) string {
		k := ""
		for _, kv := range set.ToSlice() {
			if kv.Key == tasks.AttrSource {
				continue
			}
			k += kv.Value.String() + "/"
		}
		return k
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					pts[key(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					pts[key(p.Attributes)] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					pts[key(p.Attributes)] = float64(p.Count)
				}
			}
			out[m.Name] = pts
		}
	}
	return out
}

// The intake's metrics, read through an OTel SDK reader: rows claimed per
// kind and route, flag evaluations per kind and rule, and the intake lag
// (the age of the oldest pending row).
func TestIntakeMetrics(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reader := sdkmetric.NewManualReader()
	in := v.intake(t, v.source(), func(c *tasks.IntakeConfig) {
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	})
	v.insert(t, 10, "renew", "info")   // key rule: graft
	v.insert(t, 4, "renew", "com")     // default 0%: legacy
	v.insert(t, 6, "transfer", "info") // default 100%: graft
	_, err := v.db.Exec(`UPDATE ` + v.table + ` SET created_at = now() - interval '1 hour' WHERE domain LIKE '%.com'`)
	require.NoError(t, err)
	v.setFlag(t, tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	v.setFlag(t, tasks.Flag{Kind: "transfer", DefaultPercent: 100})

	begin := time.Now()
	res, err := in.ClaimBatch(context.Background())
	require.NoError(t, err)
	require.Equal(t, 16, res.Started)
	// A submitted operation the flags leave to legacy is evaluated and
	// counted as routed to legacy.
	_, err = in.Submit(context.Background(), map[string]any{"kind": "renew", "domain": "late.com", "years": 1})
	require.NoError(t, err)

	m := metricPoints(t, reader)
	require.Equal(t, map[string]float64{"renew/graft/": 10, "transfer/graft/": 6, "renew/legacy/": 1}, m[tasks.MetricClaimed])
	require.Equal(t, map[string]float64{"renew/key/": 10, "transfer/default/": 6, "renew/default/": 1}, m[tasks.MetricEvaluations])
	require.Equal(t, map[string]float64{"": 1}, m[tasks.MetricBatchDuration], "one claim transaction")
	require.Empty(t, m[tasks.MetricFailed])
	lag := m[tasks.MetricLag][""]
	require.GreaterOrEqual(t, lag, 3600.0, "the .com renewals wait for the legacy runner")
	require.Less(t, lag, 3600+time.Since(begin).Seconds()+60)

	// Once the legacy runner took them, nothing is pending: no lag.
	_, err = v.db.Exec(`UPDATE ` + v.table + ` SET status = 'legacy' WHERE status = 'pending'`)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"": 0}, metricPoints(t, reader)[tasks.MetricLag])
}
