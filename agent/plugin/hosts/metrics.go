package hosts

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics are the hosts plugin's gauges, with CoreDNS's names.
type Metrics struct {
	entries *prometheus.GaugeVec
	reload  prometheus.Gauge
}

// NewMetrics registers the hosts metrics with reg (nil: unregistered), or
// reuses the ones registered there before.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Subsystem: "hosts", Name: "entries",
			Help: "The combined number of entries in hosts and Corefile.",
		}, []string{"hostsfile"}),
		reload: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "coredns", Subsystem: "hosts", Name: "reload_timestamp_seconds",
			Help: "The timestamp of the last reload of hosts file.",
		}),
	}
	var err error
	if m.entries, err = promreg.Register(reg, m.entries); err != nil {
		return nil, err
	}
	if m.reload, err = promreg.Register(reg, m.reload); err != nil {
		return nil, err
	}
	return m, nil
}
