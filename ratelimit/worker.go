package ratelimit

import (
	"fmt"
	"math"

	"go.opentelemetry.io/otel/metric"
)

// WorkerKey is the key to use with a worker limiter: one budget per process,
// whatever the activity or provider.
const WorkerKey = "worker"

// WorkerLimits are the per-process knobs: they protect the worker itself
// (memory, connections, CPU), where Limits protect a provider.
type WorkerLimits struct {
	// MaxConcurrent caps the activities running at once in this process.
	// Zero means no cap.
	MaxConcurrent int
	// PerSecond caps the activities started per second by this process. Zero
	// means no cap.
	PerSecond float64
	// Burst is how many activities may start at once above PerSecond, as
	// Limits.Burst. Zero means 1.
	Burst int
}

// Validate reports the first field that makes no sense, by name.
func (w WorkerLimits) Validate() error {
	switch {
	case w.MaxConcurrent < 0:
		return fmt.Errorf("ratelimit: WorkerLimits.MaxConcurrent must be >= 0, got %d", w.MaxConcurrent)
	case math.IsNaN(w.PerSecond) || math.IsInf(w.PerSecond, 0) || w.PerSecond < 0:
		return fmt.Errorf("ratelimit: WorkerLimits.PerSecond must be a finite number >= 0, got %v", w.PerSecond)
	case w.Burst < 0:
		return fmt.Errorf("ratelimit: WorkerLimits.Burst must be >= 0, got %d", w.Burst)
	}
	return nil
}

// NewWorkerLimiter returns an in-process limiter enforcing w; use it with
// WorkerKey. mp receives its metrics (nil: the otel global).
func NewWorkerLimiter(w WorkerLimits, mp metric.MeterProvider) (*LocalLimiter, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	return NewLocalLimiter(LocalConfig{
		Limits:        StaticLimits(Limits{Concurrency: w.MaxConcurrent, Rate: w.PerSecond, Burst: w.Burst}),
		MeterProvider: mp,
	})
}
