package server

import (
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics holds the request metrics with CoreDNS's names and labels.
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	duration  *durationVec
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
		duration: newDurationVec(),
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
	return m, nil
}

// monitoredTypes are the query types CoreDNS labels by name; others are
// "other". An array, so that numTypes follows it.
var monitoredTypes = [...]uint16{
	dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeSOA, dns.TypeCNAME, dns.TypePTR,
	dns.TypeTXT, dns.TypeNS, dns.TypeSRV, dns.TypeDS, dns.TypeDNSKEY, dns.TypeRRSIG,
	dns.TypeNSEC, dns.TypeNSEC3, dns.TypeHTTPS, dns.TypeIXFR, dns.TypeAXFR, dns.TypeANY,
}

const numTypes = len(monitoredTypes) + 1 // + "other"

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
	// 3 to 8: the answer-changing plugins (plugins.go), by pluginName.
	numPlugins = 9
	numRcodes  = 24 // rcodes above 23 are counted in the last slot
)

var pluginName = [numPlugins]string{"", "cache", "forward", "hosts", "rewrite", "template", "dns64", "loadbalance", "whoami"}

// routeMetrics are the metric children of one zone of one server block,
// created on first use so that the hit path only does atomic operations.
type routeMetrics struct {
	m            *Metrics
	server, zone string
	requests     [2][2][numTypes]atomic.Pointer[prometheus.Counter]
	responses    [numRcodes][numPlugins]atomic.Pointer[prometheus.Counter]
	duration     [numTypes]atomic.Pointer[durationHist]
}

// request returns the request counter; tcp and v6 select the proto and
// family labels.
func (r *routeMetrics) request(tcp, v6 bool, ti int) *prometheus.Counter {
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
	return c
}

// response returns the counter of responses with rcode written by plugin.
func (r *routeMetrics) response(rcode, plugin int) *prometheus.Counter {
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
	return c
}

// observer returns the duration histogram of a query type.
func (r *routeMetrics) observer(ti int) *durationHist {
	slot := &r.duration[ti]
	o := slot.Load()
	if o == nil {
		o = r.m.duration.child(r.server, r.zone, "", typeName(ti))
		slot.Store(o)
	}
	return o
}

// durationVec is coredns_dns_request_duration_seconds with CoreDNS's
// labels and buckets. Unlike a prometheus.HistogramVec its children take n
// observations of one value at once, so that the UDP readers count a whole
// batch with a few atomic operations.
type durationVec struct {
	desc    *prometheus.Desc
	buckets []float64

	mu       sync.Mutex
	children map[[4]string]*durationHist
}

func newDurationVec() *durationVec {
	return &durationVec{
		desc: prometheus.NewDesc("coredns_dns_request_duration_seconds",
			"Histogram of the time (in seconds) each request took per zone.",
			[]string{"server", "zone", "view", "type"}, nil),
		buckets:  promreg.TimeBuckets(),
		children: map[[4]string]*durationHist{},
	}
}

// child returns the histogram of one label set, creating it.
func (v *durationVec) child(labels ...string) *durationHist {
	var k [4]string
	copy(k[:], labels)
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.children[k]
	if h == nil {
		h = &durationHist{labels: k, buckets: v.buckets, counts: make([]atomic.Uint64, len(v.buckets))}
		v.children[k] = h
	}
	return h
}

// Describe implements prometheus.Collector.
func (v *durationVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector.
func (v *durationVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	hs := make([]*durationHist, 0, len(v.children))
	for _, h := range v.children {
		hs = append(hs, h)
	}
	v.mu.Unlock()
	for _, h := range hs {
		cum := make(map[float64]uint64, len(h.buckets))
		var acc uint64
		for i, b := range h.buckets {
			acc += h.counts[i].Load()
			cum[b] = acc
		}
		m, err := prometheus.NewConstHistogram(v.desc, h.count.Load(), math.Float64frombits(h.sum.Load()), cum, h.labels[:]...)
		if err == nil {
			ch <- m
		}
	}
}

// durationHist is one histogram of a durationVec.
type durationHist struct {
	labels  [4]string
	buckets []float64
	counts  []atomic.Uint64 // per bucket, not cumulative; +Inf is count
	count   atomic.Uint64
	sum     atomic.Uint64 // float64 bits
}

// observeN records n observations of v seconds.
func (h *durationHist) observeN(v float64, n uint64) {
	if i := sort.SearchFloat64s(h.buckets, v); i < len(h.buckets) {
		h.counts[i].Add(n)
	}
	h.count.Add(n)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v*float64(n))) {
			return
		}
	}
}

// tally accumulates the counts of a batch of answers, so that the shared
// counters are touched once per batch rather than once per query (atomic
// adds on cache lines shared by the cores are what a hit costs most).
type tally struct {
	start    time.Time
	counters [24]struct {
		c *prometheus.Counter
		n int
	}
	nc    int
	hists [8]struct {
		h *durationHist
		n uint64
	}
	nh int
}

// inc counts one in c.
func (t *tally) inc(c *prometheus.Counter) {
	for i := 0; i < t.nc; i++ {
		if t.counters[i].c == c {
			t.counters[i].n++
			return
		}
	}
	if t.nc == len(t.counters) {
		t.flush()
	}
	t.counters[t.nc].c, t.counters[t.nc].n = c, 1
	t.nc++
}

// observe records one answer in h; its duration is taken at flush.
func (t *tally) observe(h *durationHist) {
	for i := 0; i < t.nh; i++ {
		if t.hists[i].h == h {
			t.hists[i].n++
			return
		}
	}
	if t.nh == len(t.hists) {
		t.flush()
	}
	t.hists[t.nh].h, t.hists[t.nh].n = h, 1
	t.nh++
}

// flush adds the counts to the shared metrics; every answer of the batch
// is observed with the time since start.
func (t *tally) flush() {
	for i := 0; i < t.nc; i++ {
		(*t.counters[i].c).Add(float64(t.counters[i].n))
		t.counters[i].c = nil
	}
	t.nc = 0
	if t.nh > 0 {
		d := time.Since(t.start).Seconds()
		for i := 0; i < t.nh; i++ {
			t.hists[i].h.observeN(d, t.hists[i].n)
			t.hists[i].h = nil
		}
		t.nh = 0
	}
}
