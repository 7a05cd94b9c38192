package cache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics holds the cache metric vectors, with CoreDNS's names and labels.
// One Metrics is shared by every cache of a registry.
type Metrics struct {
	entries     *prometheus.GaugeVec
	requests    *prometheus.CounterVec
	hits        *prometheus.CounterVec
	misses      *prometheus.CounterVec
	prefetch    *prometheus.CounterVec
	servedStale *prometheus.CounterVec
	evictions   *prometheus.CounterVec
}

// NewMetrics registers the cache metrics with reg, or reuses the ones a
// previous call registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	srv := []string{"server", "zones", "view"}
	typed := []string{"server", "type", "zones", "view"}
	m := &Metrics{
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "entries",
			Help: "The number of elements in the cache.",
		}, typed),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "requests_total",
			Help: "The count of cache requests.",
		}, srv),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "hits_total",
			Help: "The count of cache hits.",
		}, typed),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "misses_total",
			Help: "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
		}, srv),
		prefetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "prefetch_total",
			Help: "The number of times the cache has prefetched a cached item.",
		}, srv),
		servedStale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "served_stale_total",
			Help: "The number of requests served from stale cache entries.",
		}, srv),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "evictions_total",
			Help: "The count of cache evictions.",
		}, typed),
	}
	var err error
	if m.entries, err = promreg.Register(reg, m.entries); err != nil {
		return nil, err
	}
	for _, v := range []**prometheus.CounterVec{&m.requests, &m.hits, &m.misses, &m.prefetch, &m.servedStale, &m.evictions} {
		if *v, err = promreg.Register(reg, *v); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// handles are the metric children of one cache, resolved once so that the
// hit path only does atomic adds.
type handles struct {
	entries     [2]prometheus.Gauge
	hits        [2]prometheus.Counter
	evictions   [2]prometheus.Counter
	requests    prometheus.Counter
	misses      prometheus.Counter
	prefetch    prometheus.Counter
	servedStale prometheus.Counter
}

// typeLabel is CoreDNS's cache type label for the success and denial caches.
var typeLabel = [2]string{"success", "denial"}

func (m *Metrics) handles(server, zones string) *handles {
	h := &handles{
		requests:    m.requests.WithLabelValues(server, zones, ""),
		misses:      m.misses.WithLabelValues(server, zones, ""),
		prefetch:    m.prefetch.WithLabelValues(server, zones, ""),
		servedStale: m.servedStale.WithLabelValues(server, zones, ""),
	}
	for i, t := range typeLabel {
		h.entries[i] = m.entries.WithLabelValues(server, t, zones, "")
		h.hits[i] = m.hits.WithLabelValues(server, t, zones, "")
		h.evictions[i] = m.evictions.WithLabelValues(server, t, zones, "")
	}
	return h
}
