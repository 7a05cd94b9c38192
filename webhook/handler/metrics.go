package handler

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Decisions, the "decision" label of the metrics and audit annotation.
const (
	DecisionInjected = "injected"
	DecisionSkipped  = "skipped"
	DecisionError    = "error"
)

type metrics struct {
	admissions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "admissions_total",
			Help:      "Pod admission requests handled, by decision (injected, skipped, error) and reason.",
		}, []string{"decision", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "admission_duration_seconds",
			Help:      "Time spent deciding and building the patch for a pod admission request, by decision.",
			Buckets:   []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1},
		}, []string{"decision"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.admissions, err = register(reg, m.admissions); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same name (several handlers in one process share the registry).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	var zero T
	return zero, err
}
