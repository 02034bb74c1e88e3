package interceptors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/otelinst"
)

// Instrument names. Workflow instruments carry AttrWorkflowType, activity
// instruments AttrActivityType; the completed and failed counters and the
// duration histograms also carry AttrOutcome.
const (
	// MetricWorkflowStarted counts runs that began executing (not resumes).
	MetricWorkflowStarted = "graft.workflow.started"
	// MetricWorkflowCompleted counts runs that returned a result (outcome
	// completed) or continued as new (outcome continued).
	MetricWorkflowCompleted = "graft.workflow.completed"
	// MetricWorkflowFailed counts runs that returned an error (outcome
	// failed) or were cancelled (outcome canceled).
	MetricWorkflowFailed = "graft.workflow.failed"
	// MetricWorkflowDuration is the time from a run's creation to its end, in seconds.
	MetricWorkflowDuration = "graft.workflow.duration"
	// MetricActivityStarted counts activity calls: every attempt, and every
	// call a rate limiter snoozed.
	MetricActivityStarted = "graft.activity.started"
	// MetricActivityCompleted counts attempts that returned a result.
	MetricActivityCompleted = "graft.activity.completed"
	// MetricActivityFailed counts attempts that returned an error (outcome
	// failed or canceled); the engine may retry them.
	MetricActivityFailed = "graft.activity.failed"
	// MetricActivityRetried counts attempts after the first (retries) that
	// ran, that is, were not snoozed.
	MetricActivityRetried = "graft.activity.retried"
	// MetricActivitySnoozed counts calls that returned engine.SnoozeError:
	// not attempts, the engine calls again later.
	MetricActivitySnoozed = "graft.activity.snoozed"
	// MetricActivityDuration is the duration of each attempt, in seconds.
	MetricActivityDuration = "graft.activity.duration"
)

// durationBuckets suit both an activity's milliseconds and a workflow's
// days (seconds).
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
	300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600}

// MetricsConfig configures NewMetrics.
type MetricsConfig struct {
	// MeterProvider receives the instruments. Default: the otel global provider.
	MeterProvider metric.MeterProvider
}

// Metrics records OpenTelemetry counters and latency histograms per
// workflow type and per activity type (see the Metric constants). A run is
// counted as started on its first execution and as completed or failed
// when it returns live, so replays add nothing; a run resumed after a crash
// that happened between its return and the record of its end can be
// counted twice (at-least-once, like the activity that was in flight).
//
// The counters are observable (asynchronous) instruments: a call adds one
// to a count of its own, and a collection reports each count's total. A
// synchronous counter's Add costs hundreds of nanoseconds in the SDK
// (resolving the attribute set, then a lookup of the data point under a
// lock), eight per workflow of three activities; the data exported is the
// same, monotonic sums under the same names and attributes, except that
// the counters carry no exemplars (the duration histograms do).
type Metrics struct {
	engine.InterceptorBase
	wfStarted, wfCompleted, wfFailed                            metric.Int64ObservableCounter
	actStarted, actCompleted, actFailed, actRetried, actSnoozed metric.Int64ObservableCounter
	wfDuration, actDuration                                     metric.Float64Histogram
	clock                                                       stopwatch

	// workflows and activities hold the *typeCounts of each workflow type
	// and activity type.
	workflows, activities sync.Map
}

// NewMetrics creates the instruments on cfg.MeterProvider.
func NewMetrics(cfg MetricsConfig) (*Metrics, error) {
	meter := otelinst.New(cfg.MeterProvider, "github.com/graftdev/graft/interceptors")
	m := &Metrics{
		wfStarted:    meter.ObservableCounter(MetricWorkflowStarted, "Workflow runs that began executing.", "{run}"),
		wfCompleted:  meter.ObservableCounter(MetricWorkflowCompleted, "Workflow runs that completed or continued as new.", "{run}"),
		wfFailed:     meter.ObservableCounter(MetricWorkflowFailed, "Workflow runs that failed or were cancelled.", "{run}"),
		actStarted:   meter.ObservableCounter(MetricActivityStarted, "Activity calls (attempts and snoozed calls).", "{call}"),
		actCompleted: meter.ObservableCounter(MetricActivityCompleted, "Activity attempts that completed.", "{attempt}"),
		actFailed:    meter.ObservableCounter(MetricActivityFailed, "Activity attempts that failed.", "{attempt}"),
		actRetried:   meter.ObservableCounter(MetricActivityRetried, "Activity attempts after the first.", "{attempt}"),
		actSnoozed:   meter.ObservableCounter(MetricActivitySnoozed, "Activity calls snoozed (run again later, not an attempt).", "{call}"),
		wfDuration:   meter.Histogram(MetricWorkflowDuration, "Time from a workflow run's creation to its end.", "s", durationBuckets...),
		actDuration:  meter.Histogram(MetricActivityDuration, "Duration of one activity attempt.", "s", durationBuckets...),
		clock:        newStopwatch(),
	}
	meter.Callback(m.observe, m.wfStarted, m.wfCompleted, m.wfFailed,
		m.actStarted, m.actCompleted, m.actFailed, m.actRetried, m.actSnoozed)
	if err := meter.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Outcomes a workflow or an activity attempt ends with, as indexes into
// typeCounts' arrays. A snooze is counted apart: it is not an attempt.
const (
	endCompleted = iota
	endContinued
	endFailed
	endCanceled
	numEnds
)

var endOutcomes = [numEnds]string{OutcomeCompleted, OutcomeContinued, OutcomeFailed, OutcomeCanceled}

// endIndex returns outcome's index in endOutcomes.
func endIndex(outcome string) int {
	switch outcome {
	case OutcomeCompleted:
		return endCompleted
	case OutcomeContinued:
		return endContinued
	case OutcomeCanceled:
		return endCanceled
	}
	return endFailed
}

// typeCounts are the counts of one workflow or activity type, and its
// attribute sets, made once: the type alone, and the type with each
// outcome (with the histogram's record options for them).
type typeCounts struct {
	started, retried, snoozed atomic.Int64
	ended                     [numEnds]atomic.Int64

	plain    metric.MeasurementOption
	outcomes [numEnds]metric.MeasurementOption
	record   [numEnds][]metric.RecordOption
}

func newTypeCounts(typeKey, name string) *typeCounts {
	c := &typeCounts{plain: metric.WithAttributeSet(attribute.NewSet(attribute.String(typeKey, name)))}
	for i, o := range endOutcomes {
		c.outcomes[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String(typeKey, name), attribute.String(AttrOutcome, o)))
		c.record[i] = []metric.RecordOption{c.outcomes[i]}
	}
	return c
}

// countsOf returns the counts of type name in types (m.workflows or
// m.activities), made on first use.
func countsOf(types *sync.Map, typeKey, name string) *typeCounts {
	if c, ok := types.Load(name); ok {
		return c.(*typeCounts)
	}
	c, _ := types.LoadOrStore(name, newTypeCounts(typeKey, name))
	return c.(*typeCounts)
}

// observe reports every count's total. A count still at zero is left out,
// as a synchronous counter never added to has no data point.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	put := func(inst metric.Int64Observable, n int64, opt metric.MeasurementOption) {
		if n > 0 {
			o.ObserveInt64(inst, n, opt)
		}
	}
	m.workflows.Range(func(_, v any) bool {
		c := v.(*typeCounts)
		put(m.wfStarted, c.started.Load(), c.plain)
		for i := range numEnds {
			inst := m.wfFailed
			if i == endCompleted || i == endContinued {
				inst = m.wfCompleted
			}
			put(inst, c.ended[i].Load(), c.outcomes[i])
		}
		return true
	})
	m.activities.Range(func(_, v any) bool {
		c := v.(*typeCounts)
		put(m.actStarted, c.started.Load(), c.plain)
		put(m.actRetried, c.retried.Load(), c.plain)
		put(m.actSnoozed, c.snoozed.Load(), c.plain)
		for i := range numEnds {
			inst := m.actFailed
			if i == endCompleted {
				inst = m.actCompleted
			}
			put(inst, c.ended[i].Load(), c.outcomes[i])
		}
		return true
	})
	return nil
}

// ExecuteWorkflow counts a live start and a live end. Like Logging's, the
// methods around next keep small frames: the measurements are made in
// functions of their own.
func (m *Metrics) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (any, error) {
	if !in.Replaying {
		m.workflowStarted(in)
	}
	out, err := next(ctx, in)
	if !engine.IsReplaying(ctx) {
		m.workflowEnded(in, workflowOutcome(err))
	}
	return out, err
}

//go:noinline
func (m *Metrics) workflowStarted(in *engine.ExecuteWorkflowInput) {
	countsOf(&m.workflows, AttrWorkflowType, in.Info.WorkflowType).started.Add(1)
}

//go:noinline
func (m *Metrics) workflowEnded(in *engine.ExecuteWorkflowInput, outcome string) {
	c := countsOf(&m.workflows, AttrWorkflowType, in.Info.WorkflowType)
	i := endIndex(outcome)
	c.ended[i].Add(1)
	if !in.Info.StartTime.IsZero() {
		m.wfDuration.Record(context.Background(), time.Since(in.Info.StartTime).Seconds(), c.record[i]...)
	}
}

// ExecuteActivity counts the attempt and records its duration.
func (m *Metrics) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	c, start := m.activityStarted(in)
	out, err := next(ctx, in)
	m.activityEnded(ctx, c, in, m.clock.now()-start, activityOutcome(err))
	return out, err
}

//go:noinline
func (m *Metrics) activityStarted(in *engine.ActivityInput) (*typeCounts, time.Duration) {
	c := countsOf(&m.activities, AttrActivityType, in.Info.ActivityName)
	c.started.Add(1)
	return c, m.clock.now()
}

//go:noinline
func (m *Metrics) activityEnded(ctx context.Context, c *typeCounts, in *engine.ActivityInput, d time.Duration, outcome string) {
	if outcome == OutcomeSnoozed {
		c.snoozed.Add(1)
		return // not an attempt: the same attempt is made again later
	}
	if in.Info.Attempt > 1 {
		c.retried.Add(1)
	}
	i := endIndex(outcome)
	c.ended[i].Add(1)
	m.actDuration.Record(ctx, d.Seconds(), c.record[i]...)
}
