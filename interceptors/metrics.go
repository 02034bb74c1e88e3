package interceptors

import (
	"context"
	"sync"
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
type Metrics struct {
	engine.InterceptorBase
	wfStarted, wfCompleted, wfFailed                            metric.Int64Counter
	actStarted, actCompleted, actFailed, actRetried, actSnoozed metric.Int64Counter
	wfDuration, actDuration                                     metric.Float64Histogram

	// opts caches the options of each (kind, type, outcome) as
	// *measureOpts, so a measurement neither builds and sorts attributes nor
	// allocates.
	opts sync.Map
}

// NewMetrics creates the instruments on cfg.MeterProvider.
func NewMetrics(cfg MetricsConfig) (*Metrics, error) {
	meter := otelinst.New(cfg.MeterProvider, "github.com/graftdev/graft/interceptors")
	m := &Metrics{
		wfStarted:    meter.Counter(MetricWorkflowStarted, "Workflow runs that began executing.", "{run}"),
		wfCompleted:  meter.Counter(MetricWorkflowCompleted, "Workflow runs that completed or continued as new.", "{run}"),
		wfFailed:     meter.Counter(MetricWorkflowFailed, "Workflow runs that failed or were cancelled.", "{run}"),
		actStarted:   meter.Counter(MetricActivityStarted, "Activity calls (attempts and snoozed calls).", "{call}"),
		actCompleted: meter.Counter(MetricActivityCompleted, "Activity attempts that completed.", "{attempt}"),
		actFailed:    meter.Counter(MetricActivityFailed, "Activity attempts that failed.", "{attempt}"),
		actRetried:   meter.Counter(MetricActivityRetried, "Activity attempts after the first.", "{attempt}"),
		actSnoozed:   meter.Counter(MetricActivitySnoozed, "Activity calls snoozed (run again later, not an attempt).", "{call}"),
		wfDuration:   meter.Histogram(MetricWorkflowDuration, "Time from a workflow run's creation to its end.", "s", durationBuckets...),
		actDuration:  meter.Histogram(MetricActivityDuration, "Duration of one activity attempt.", "s", durationBuckets...),
	}
	if err := meter.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

type attrKey struct {
	activity      bool
	name, outcome string
}

// measureOpts are the options of measurements with one attribute set, as
// ready-made slices: passing them on allocates nothing.
type measureOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// attrs returns the options for a workflow or activity type and an outcome
// ("" for none).
func (m *Metrics) attrs(activity bool, name, outcome string) *measureOpts {
	k := attrKey{activity, name, outcome}
	if o, ok := m.opts.Load(k); ok {
		return o.(*measureOpts)
	}
	typeKey := AttrWorkflowType
	if activity {
		typeKey = AttrActivityType
	}
	kvs := []attribute.KeyValue{attribute.String(typeKey, name)}
	if outcome != "" {
		kvs = append(kvs, attribute.String(AttrOutcome, outcome))
	}
	set := metric.WithAttributeSet(attribute.NewSet(kvs...))
	o, _ := m.opts.LoadOrStore(k, &measureOpts{add: []metric.AddOption{set}, record: []metric.RecordOption{set}})
	return o.(*measureOpts)
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
		m.workflowEnded(in, err)
	}
	return out, err
}

//go:noinline
func (m *Metrics) workflowStarted(in *engine.ExecuteWorkflowInput) {
	m.wfStarted.Add(context.Background(), 1, m.attrs(false, in.Info.WorkflowType, "").add...)
}

//go:noinline
func (m *Metrics) workflowEnded(in *engine.ExecuteWorkflowInput, err error) {
	bg := context.Background()
	outcome := workflowOutcome(err)
	opt := m.attrs(false, in.Info.WorkflowType, outcome)
	if outcome == OutcomeCompleted || outcome == OutcomeContinued {
		m.wfCompleted.Add(bg, 1, opt.add...)
	} else {
		m.wfFailed.Add(bg, 1, opt.add...)
	}
	if !in.Info.StartTime.IsZero() {
		m.wfDuration.Record(bg, time.Since(in.Info.StartTime).Seconds(), opt.record...)
	}
}

// ExecuteActivity counts the attempt and records its duration.
func (m *Metrics) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	start := m.activityStarted(ctx, in)
	out, err := next(ctx, in)
	m.activityEnded(ctx, in, start, err)
	return out, err
}

//go:noinline
func (m *Metrics) activityStarted(ctx context.Context, in *engine.ActivityInput) time.Time {
	m.actStarted.Add(ctx, 1, m.attrs(true, in.Info.ActivityName, "").add...)
	return time.Now()
}

//go:noinline
func (m *Metrics) activityEnded(ctx context.Context, in *engine.ActivityInput, start time.Time, err error) {
	typ := in.Info.ActivityName
	outcome := activityOutcome(err)
	if outcome == OutcomeSnoozed {
		m.actSnoozed.Add(ctx, 1, m.attrs(true, typ, "").add...)
		return // not an attempt: the same attempt is made again later
	}
	if in.Info.Attempt > 1 {
		m.actRetried.Add(ctx, 1, m.attrs(true, typ, "").add...)
	}
	withOutcome := m.attrs(true, typ, outcome)
	if outcome == OutcomeCompleted {
		m.actCompleted.Add(ctx, 1, withOutcome.add...)
	} else {
		m.actFailed.Add(ctx, 1, withOutcome.add...)
	}
	m.actDuration.Record(ctx, time.Since(start).Seconds(), withOutcome.record...)
}
