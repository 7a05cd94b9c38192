package iptables

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// SetupErrorTypes are the errortype label values of
// coredns_nodecache_setup_errors_total; each starts at 0 so that dashboards
// and alerts see the series before the first error.
var SetupErrorTypes = []string{"interfaceadd", "iptables", "iptables_lock", "configmap", "sysctl"}

// NewSetupErrors registers (or finds, when it is already registered)
// coredns_nodecache_setup_errors_total{errortype}, node-cache's counter of
// node setup failures (errortype: see SetupErrorTypes).
func NewSetupErrors(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c, err := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coredns",
		Subsystem: "nodecache",
		Name:      "setup_errors_total",
		Help:      "The number of errors during periodic network setup for node-cache.",
	}, []string{"errortype"}))
	if err != nil {
		return nil, err
	}
	for _, t := range SetupErrorTypes {
		c.WithLabelValues(t)
	}
	return c, nil
}
