package iptables

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// SetupErrorTypes are the errortype label values of
// coredns_nodecache_setup_errors_total; each starts at 0 so that dashboards
// and alerts see the series before the first error.
var SetupErrorTypes = []string{"interfaceadd", "iptables", "iptables_lock", "configmap", "sysctl"}

// NewSetupErrors registers (or finds, when it is already registered)
// coredns_nodecache_setup_errors_total{errortype}, node-cache's counter of
// node setup failures (errortype: see SetupErrorTypes).
func NewSetupErrors(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coredns",
		Subsystem: "nodecache",
		Name:      "setup_errors_total",
		Help:      "The number of errors during periodic network setup for node-cache.",
	}, []string{"errortype"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	for _, t := range SetupErrorTypes {
		c.WithLabelValues(t)
	}
	return c, nil
}
