package forward

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// proxyName is the proxy_name label of the coredns_proxy_* metrics: the
// forward plugin's name, as CoreDNS sets it.
const proxyName = "forward"

// metrics are the forward plugin's metrics with CoreDNS v1.13's names and
// labels: since CoreDNS 1.11 the per-upstream families are
// coredns_proxy_* (labelled proxy_name="forward"); two coredns_forward_*
// counters remain. coredns_forward_requests_total, which CoreDNS 1.11
// dropped, is kept (docs/migrating.md says why). Several Forwarders (one
// per server block, and new ones on every reload) share one registry, so
// registering an existing collector reuses it.
type metrics struct {
	requests             *prometheus.CounterVec   // coredns_forward_requests_total{to}
	duration             *prometheus.HistogramVec // coredns_proxy_request_duration_seconds{proxy_name,to,rcode}
	healthcheckFailures  *prometheus.CounterVec   // coredns_proxy_healthcheck_failures_total{proxy_name,to}
	connCacheHits        *prometheus.CounterVec   // coredns_proxy_conn_cache_hits_total{proxy_name,to,proto}
	connCacheMisses      *prometheus.CounterVec   // coredns_proxy_conn_cache_misses_total{proxy_name,to,proto}
	healthcheckBroken    prometheus.Counter       // coredns_forward_healthcheck_broken_total
	maxConcurrentRejects prometheus.Counter       // coredns_forward_max_concurrent_rejects_total
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "requests_total",
			Help: "Counter of requests made per upstream.",
		}, []string{"to"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "proxy", Name: "request_duration_seconds",
			Buckets: promreg.TimeBuckets(),
			Help:    "Histogram of the time each request took.",
		}, []string{"proxy_name", "to", "rcode"}),
		healthcheckFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "proxy", Name: "healthcheck_failures_total",
			Help: "Counter of the number of failed healthchecks.",
		}, []string{"proxy_name", "to"}),
		connCacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "proxy", Name: "conn_cache_hits_total",
			Help: "Counter of connection cache hits per upstream and protocol.",
		}, []string{"proxy_name", "to", "proto"}),
		connCacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "proxy", Name: "conn_cache_misses_total",
			Help: "Counter of connection cache misses per upstream and protocol.",
		}, []string{"proxy_name", "to", "proto"}),
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
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.healthcheckFailures, err = promreg.Register(reg, m.healthcheckFailures); err != nil {
		return nil, err
	}
	if m.connCacheHits, err = promreg.Register(reg, m.connCacheHits); err != nil {
		return nil, err
	}
	if m.connCacheMisses, err = promreg.Register(reg, m.connCacheMisses); err != nil {
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

// connCache are the connection cache counters of one upstream and
// protocol ("udp" or "tcp").
type connCache struct{ hits, misses prometheus.Counter }

func (m *metrics) connCache(to, proto string) connCache {
	return connCache{
		hits:   m.connCacheHits.WithLabelValues(proxyName, to, proto),
		misses: m.connCacheMisses.WithLabelValues(proxyName, to, proto),
	}
}

// count counts one connection taken from the cache (reused) or dialed.
func (c connCache) count(reused bool) {
	if reused {
		c.hits.Inc()
	} else {
		c.misses.Inc()
	}
}
