package forward

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// metrics are the forward plugin's metrics with CoreDNS's names and labels.
// Several Forwarders (one per server block, and new ones on every reload)
// share one registry, so registering an existing collector reuses it.
type metrics struct {
	requests             *prometheus.CounterVec   // coredns_forward_requests_total{to}
	responses            *prometheus.CounterVec   // coredns_forward_responses_total{rcode,to}
	duration             *prometheus.HistogramVec // coredns_forward_request_duration_seconds{to,rcode}
	healthcheckFailures  *prometheus.CounterVec   // coredns_forward_healthcheck_failures_total{to}
	healthcheckBroken    prometheus.Counter       // coredns_forward_healthcheck_broken_total
	maxConcurrentRejects prometheus.Counter       // coredns_forward_max_concurrent_rejects_total
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "requests_total",
			Help: "Counter of requests made per upstream.",
		}, []string{"to"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "responses_total",
			Help: "Counter of responses received per upstream.",
		}, []string{"rcode", "to"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "request_duration_seconds",
			Buckets: promreg.TimeBuckets(),
			Help:    "Histogram of the time each request took.",
		}, []string{"to", "rcode"}),
		healthcheckFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "healthcheck_failures_total",
			Help: "Counter of the number of failed healthchecks.",
		}, []string{"to"}),
		healthcheckBroken: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "healthcheck_broken_total",
			Help: "Counter of the number of complete failures of the healthchecks.",
		}),
		maxConcurrentRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "max_concurrent_rejects_total",
			Help: "Counter of the number of queries rejected because the concurrent queries were at maximum.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = promreg.Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.responses, err = promreg.Register(reg, m.responses); err != nil {
		return nil, err
	}
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.healthcheckFailures, err = promreg.Register(reg, m.healthcheckFailures); err != nil {
		return nil, err
	}
	if m.healthcheckBroken, err = promreg.Register(reg, m.healthcheckBroken); err != nil {
		return nil, err
	}
	if m.maxConcurrentRejects, err = promreg.Register(reg, m.maxConcurrentRejects); err != nil {
		return nil, err
	}
	return m, nil
}
