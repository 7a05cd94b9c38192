package server

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the request metrics with CoreDNS's names and labels.
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// NewMetrics registers the DNS request metrics with reg (nil: not
// registered), reusing ones a previous call registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "requests_total",
			Help: "Counter of DNS requests made per zone, protocol and family.",
		}, []string{"server", "zone", "view", "proto", "family", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "responses_total",
			Help: "Counter of response status codes.",
		}, []string{"server", "zone", "view", "rcode", "plugin"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "request_duration_seconds",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
			Help:    "Histogram of the time (in seconds) each request took per zone.",
		}, []string{"server", "zone", "view", "type"}),
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.responses, err = register(reg, m.responses); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register dns metrics: %w", err)
	}
	return c, nil
}

// monitoredTypes are the query types CoreDNS labels by name; others are
// "other".
var monitoredTypes = []uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeSOA, dns.TypeCNAME, dns.TypePTR,
	dns.TypeTXT, dns.TypeNS, dns.TypeSRV, dns.TypeDS, dns.TypeDNSKEY, dns.TypeRRSIG,
	dns.TypeNSEC, dns.TypeNSEC3, dns.TypeHTTPS, dns.TypeIXFR, dns.TypeAXFR, dns.TypeANY,
}

const numTypes = 19 // len(monitoredTypes) + "other"

// typeIndex maps a query type to its slot in the metric tables.
func typeIndex(t uint16) int {
	for i, m := range monitoredTypes {
		if m == t {
			return i
		}
	}
	return numTypes - 1
}

func typeName(i int) string {
	if i < len(monitoredTypes) {
		return dns.TypeToString[monitoredTypes[i]]
	}
	return "other"
}

// Plugins named in the responses_total plugin label.
const (
	pluginNone    = 0
	pluginCache   = 1
	pluginForward = 2
	numPlugins    = 3
	numRcodes     = 24 // rcodes above 23 are counted in the last slot
)

var pluginName = [numPlugins]string{"", "cache", "forward"}

// routeMetrics are the metric children of one zone of one server block,
// created on first use so that the hot path only does atomic operations.
type routeMetrics struct {
	m            *Metrics
	server, zone string
	requests     [2][2][numTypes]atomic.Pointer[prometheus.Counter]
	responses    [numRcodes][numPlugins]atomic.Pointer[prometheus.Counter]
	duration     [numTypes]atomic.Pointer[prometheus.Observer]
}

// request counts a request; tcp and v6 select the proto and family labels.
func (r *routeMetrics) request(tcp, v6 bool, ti int) {
	p, f := 0, 0
	if tcp {
		p = 1
	}
	if v6 {
		f = 1
	}
	slot := &r.requests[p][f][ti]
	c := slot.Load()
	if c == nil {
		proto := [2]string{"udp", "tcp"}[p]
		cc := r.m.requests.WithLabelValues(r.server, r.zone, "", proto, strconv.Itoa(f+1), typeName(ti))
		c = &cc
		slot.Store(c)
	}
	(*c).Inc()
}

// response counts a response with rcode, written by plugin.
func (r *routeMetrics) response(rcode, plugin int) {
	if rcode >= numRcodes || rcode < 0 {
		rcode = numRcodes - 1
	}
	slot := &r.responses[rcode][plugin]
	c := slot.Load()
	if c == nil {
		name := dns.RcodeToString[rcode]
		if name == "" {
			name = strconv.Itoa(rcode)
		}
		cc := r.m.responses.WithLabelValues(r.server, r.zone, "", name, pluginName[plugin])
		c = &cc
		slot.Store(c)
	}
	(*c).Inc()
}

// observer returns the duration histogram of a query type.
func (r *routeMetrics) observer(ti int) prometheus.Observer {
	slot := &r.duration[ti]
	o := slot.Load()
	if o == nil {
		oo := r.m.duration.WithLabelValues(r.server, r.zone, "", typeName(ti))
		o = &oo
		slot.Store(o)
	}
	return *o
}
