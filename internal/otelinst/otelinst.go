// Package otelinst creates the OpenTelemetry instruments of graft's packages
// one way: a Meter on the configured provider (the global one when nil) that
// keeps the first error, so a constructor lists its instruments and checks
// one error at the end. It imports nothing of graft.
package otelinst

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Meter creates instruments under one scope and remembers the first error.
// After an error it creates nothing more and returns nil instruments; Err
// reports it.
type Meter struct {
	m   metric.Meter
	err error
}

// New returns a Meter for scope (the package's import path) on mp, or on the
// global provider when mp is nil.
func New(mp metric.MeterProvider, scope string) *Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return &Meter{m: mp.Meter(scope)}
}

// Err is the first error met creating an instrument.
func (b *Meter) Err() error { return b.err }

func keep[T any](b *Meter, create func() (T, error)) T {
	var zero T
	if b.err != nil {
		return zero
	}
	v, err := create()
	if err != nil {
		b.err = err
		return zero
	}
	return v
}

// Counter is an Int64Counter.
func (b *Meter) Counter(name, desc, unit string) metric.Int64Counter {
	return keep(b, func() (metric.Int64Counter, error) {
		return b.m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
	})
}

// Histogram is a Float64Histogram; bounds, when given, are its explicit
// bucket boundaries.
func (b *Meter) Histogram(name, desc, unit string, bounds ...float64) metric.Float64Histogram {
	return keep(b, func() (metric.Float64Histogram, error) {
		opts := []metric.Float64HistogramOption{metric.WithDescription(desc), metric.WithUnit(unit)}
		if len(bounds) > 0 {
			opts = append(opts, metric.WithExplicitBucketBoundaries(bounds...))
		}
		return b.m.Float64Histogram(name, opts...)
	})
}

// ObservableCounter is an Int64ObservableCounter (observe its running total
// in a Callback).
func (b *Meter) ObservableCounter(name, desc, unit string) metric.Int64ObservableCounter {
	return keep(b, func() (metric.Int64ObservableCounter, error) {
		return b.m.Int64ObservableCounter(name, metric.WithDescription(desc), metric.WithUnit(unit))
	})
}

// IntGauge is an Int64ObservableGauge (observe it in a Callback).
func (b *Meter) IntGauge(name, desc, unit string) metric.Int64ObservableGauge {
	return keep(b, func() (metric.Int64ObservableGauge, error) {
		return b.m.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
	})
}

// FloatGauge is a Float64ObservableGauge.
func (b *Meter) FloatGauge(name, desc, unit string) metric.Float64ObservableGauge {
	return keep(b, func() (metric.Float64ObservableGauge, error) {
		return b.m.Float64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
	})
}

// Callback registers f to observe insts at each collection.
func (b *Meter) Callback(f metric.Callback, insts ...metric.Observable) metric.Registration {
	return keep(b, func() (metric.Registration, error) { return b.m.RegisterCallback(f, insts...) })
}
