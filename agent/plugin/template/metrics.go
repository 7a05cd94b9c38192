package template

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics are the template plugin's counters, with CoreDNS's names and
// labels.
type Metrics struct {
	matches, failures, rrFailures *prometheus.CounterVec
}

// NewMetrics registers the template metrics with reg (nil: unregistered),
// or reuses the ones registered there before.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"server", "zone", "view", "class", "type", "section", "template"}
	m := &Metrics{
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "template", Name: "matches_total",
			Help: "Counter of template regex matches.",
		}, []string{"server", "zone", "view", "class", "type"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "template", Name: "template_failures_total",
			Help: "Counter of go template failures.",
		}, labels),
		rrFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "template", Name: "rr_failures_total",
			Help: "Counter of mis-templated RRs.",
		}, labels),
	}
	for _, v := range []**prometheus.CounterVec{&m.matches, &m.failures, &m.rrFailures} {
		var err error
		if *v, err = promreg.Register(reg, *v); err != nil {
			return nil, err
		}
	}
	return m, nil
}
