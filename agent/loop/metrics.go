package loop

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics counts the loops the probes found. CoreDNS has no such metric
// (a loop is fatal there); the agent refuses a reloaded configuration with a
// loop and keeps serving, so the refusal must be visible to alerts.
type Metrics struct {
	detected *prometheus.CounterVec // nodelocaldns_loop_detected_total{zone}
}

// NewMetrics registers the loop metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{detected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "nodelocaldns", Subsystem: "loop", Name: "detected_total",
		Help: "Counter of forwarding loops detected by the loop probe, per zone (a reloaded configuration with a loop is refused).",
	}, []string{"zone"})}
	var err error
	if m.detected, err = promreg.Register(reg, m.detected); err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	return m, nil
}

// Count counts the loop err reports (an *Error, possibly wrapped); other
// errors are not counted.
func (m *Metrics) Count(err error) {
	var le *Error
	if m != nil && errors.As(err, &le) {
		m.detected.WithLabelValues(le.Zone).Inc()
	}
}
