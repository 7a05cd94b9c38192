package server

import (
	"math"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics holds the request metrics with CoreDNS v1.13's names and labels
// (plugin/metrics): requests, DO requests, responses by rcode and plugin,
// request duration, and request and response sizes.
type Metrics struct {
	panics       prometheus.Counter
	requests     *prometheus.CounterVec
	doRequests   *prometheus.CounterVec
	responses    *prometheus.CounterVec
	duration     *histVec
	requestSize  *histVec
	responseSize *histVec
}

// sizeBuckets are CoreDNS's buckets of the size histograms (bytes).
var sizeBuckets = []float64{0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3}

// NewMetrics registers the DNS request metrics with reg (nil: not
// registered), reusing ones a previous call registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Name: "panics_total",
			Help: "A metrics that counts the number of panics.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "requests_total",
			Help: "Counter of DNS requests made per zone, protocol and family.",
		}, []string{"server", "zone", "view", "proto", "family", "type"}),
		doRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "do_requests_total",
			Help: "Counter of DNS requests with DO bit set per zone.",
		}, []string{"server", "zone", "view"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "responses_total",
			Help: "Counter of response status codes.",
		}, []string{"server", "zone", "view", "rcode", "plugin"}),
		duration: newHistVec("coredns_dns_request_duration_seconds",
			"Histogram of the time (in seconds) each request took per zone.",
			promreg.TimeBuckets(), "server", "zone", "view"),
		requestSize: newHistVec("coredns_dns_request_size_bytes",
			"Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
			sizeBuckets, "server", "zone", "view", "proto"),
		responseSize: newHistVec("coredns_dns_response_size_bytes",
			"Size of the returned response in bytes.",
			sizeBuckets, "server", "zone", "view", "proto"),
	}
	var err error
	if m.panics, err = promreg.Register(reg, m.panics); err != nil {
		return nil, err
	}
	if m.requests, err = promreg.Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.doRequests, err = promreg.Register(reg, m.doRequests); err != nil {
		return nil, err
	}
	if m.responses, err = promreg.Register(reg, m.responses); err != nil {
		return nil, err
	}
	for _, h := range []**histVec{&m.duration, &m.requestSize, &m.responseSize} {
		if *h, err = promreg.Register(reg, *h); err != nil {
			return nil, err
		}
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

// droppedZone is the zone label of queries no server block serves
// (CoreDNS's vars.Dropped: not a valid zone name, so it cannot clash).
const droppedZone = "dropped"

// routeMetrics are the metric children of one zone of one server block,
// created on first use so that the hit path only does atomic operations.
type routeMetrics struct {
	m            *Metrics
	server, zone string
	requests     [2][2][numTypes]atomic.Pointer[prometheus.Counter]
	doRequests   atomic.Pointer[prometheus.Counter]
	responses    [numRcodes][numPlugins]atomic.Pointer[prometheus.Counter]
	duration     atomic.Pointer[hist]
	requestSize  [2]atomic.Pointer[hist] // by proto: udp, tcp
	responseSize [2]atomic.Pointer[hist]
}

var protoName = [2]string{"udp", "tcp"}

func protoIndex(tcp bool) int {
	if tcp {
		return 1
	}
	return 0
}

// request returns the request counter; tcp and v6 select the proto and
// family labels.
func (r *routeMetrics) request(tcp, v6 bool, ti int) *prometheus.Counter {
	p, f := protoIndex(tcp), 0
	if v6 {
		f = 1
	}
	slot := &r.requests[p][f][ti]
	c := slot.Load()
	if c == nil {
		cc := r.m.requests.WithLabelValues(r.server, r.zone, "", protoName[p], strconv.Itoa(f+1), typeName(ti))
		c = &cc
		slot.Store(c)
	}
	return c
}

// do returns the counter of requests with the DO bit.
func (r *routeMetrics) do() *prometheus.Counter {
	c := r.doRequests.Load()
	if c == nil {
		cc := r.m.doRequests.WithLabelValues(r.server, r.zone, "")
		c = &cc
		r.doRequests.Store(c)
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

// observer returns the request duration histogram.
func (r *routeMetrics) observer() *hist {
	o := r.duration.Load()
	if o == nil {
		o = r.m.duration.child(r.server, r.zone, "")
		r.duration.Store(o)
	}
	return o
}

// sizes returns the request and response size histograms of a protocol.
func (r *routeMetrics) sizes(tcp bool) (req, resp *hist) {
	p := protoIndex(tcp)
	req, resp = r.requestSize[p].Load(), r.responseSize[p].Load()
	if req == nil {
		req = r.m.requestSize.child(r.server, r.zone, "", protoName[p])
		r.requestSize[p].Store(req)
	}
	if resp == nil {
		resp = r.m.responseSize.child(r.server, r.zone, "", protoName[p])
		r.responseSize[p].Store(resp)
	}
	return req, resp
}

// observeAll records one answer of the miss path (or an error reply): its
// request (DO bit, size) and response (rcode, plugin, size) and duration.
func (r *routeMetrics) observeAll(tcp, v6 bool, qtype uint16, do bool, rcode, plugin, reqLen, respLen int, d time.Duration) {
	(*r.request(tcp, v6, typeIndex(qtype))).Inc()
	if do {
		(*r.do()).Inc()
	}
	(*r.response(rcode, plugin)).Inc()
	r.observer().observeN(d.Seconds(), 1)
	req, resp := r.sizes(tcp)
	req.observeN(float64(reqLen), 1)
	resp.observeN(float64(respLen), 1)
}

// histVec is a histogram family with CoreDNS's labels and buckets. Unlike a
// prometheus.HistogramVec its children take n observations of one value at
// once, or a batch's counts of one bucket, so that the UDP readers count a
// whole batch with a few atomic operations.
type histVec struct {
	desc    *prometheus.Desc
	buckets []float64
	nlabels int

	mu       sync.Mutex
	children map[[4]string]*hist
}

func newHistVec(name, help string, buckets []float64, labels ...string) *histVec {
	return &histVec{
		desc:     prometheus.NewDesc(name, help, labels, nil),
		buckets:  buckets,
		nlabels:  len(labels),
		children: map[[4]string]*hist{},
	}
}

// child returns the histogram of one label set, creating it.
func (v *histVec) child(labels ...string) *hist {
	var k [4]string
	copy(k[:], labels)
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.children[k]
	if h == nil {
		h = &hist{labels: k, nlabels: v.nlabels, buckets: v.buckets, counts: make([]atomic.Uint64, len(v.buckets))}
		v.children[k] = h
	}
	return h
}

// Describe implements prometheus.Collector.
func (v *histVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector.
func (v *histVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	hs := make([]*hist, 0, len(v.children))
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
		m, err := prometheus.NewConstHistogram(v.desc, h.count.Load(), math.Float64frombits(h.sum.Load()), cum, h.labels[:h.nlabels]...)
		if err == nil {
			ch <- m
		}
	}
}

// hist is one histogram of a histVec.
type hist struct {
	labels  [4]string
	nlabels int
	buckets []float64
	counts  []atomic.Uint64 // per bucket, not cumulative; +Inf is count
	count   atomic.Uint64
	sum     atomic.Uint64 // float64 bits
}

// bucket returns the index of v's bucket; len(buckets) is +Inf.
func (h *hist) bucket(v float64) int { return sort.SearchFloat64s(h.buckets, v) }

// observeN records n observations of v.
func (h *hist) observeN(v float64, n uint64) { h.add(h.bucket(v), n, v*float64(n)) }

// add records n observations in bucket b whose values add up to sum.
func (h *hist) add(b int, n uint64, sum float64) {
	if b < len(h.buckets) {
		h.counts[b].Add(n)
	}
	h.count.Add(n)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+sum)) {
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
		h *hist
		n uint64
	}
	nh    int
	sizes [16]struct {
		h   *hist
		b   int
		n   uint64
		sum float64
	}
	ns int
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
func (t *tally) observe(h *hist) {
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

// observeSize records one size (bytes) in h.
func (t *tally) observeSize(h *hist, size int) {
	v := float64(size)
	b := h.bucket(v)
	for i := 0; i < t.ns; i++ {
		if s := &t.sizes[i]; s.h == h && s.b == b {
			s.n++
			s.sum += v
			return
		}
	}
	if t.ns == len(t.sizes) {
		t.flush()
	}
	s := &t.sizes[t.ns]
	s.h, s.b, s.n, s.sum = h, b, 1, v
	t.ns++
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
	for i := 0; i < t.ns; i++ {
		s := &t.sizes[i]
		s.h.add(s.b, s.n, s.sum)
		s.h = nil
	}
	t.ns = 0
}

// recoverAnswer turns a panic while answering pkt into a SERVFAIL reply
// in *out, counted in coredns_panics_total and logged with its stack, as
// CoreDNS's server does: one bad query must not stop the agent.
func (s *Server) recoverAnswer(pkt []byte, out *[]byte) {
	v := recover()
	if v == nil {
		return
	}
	s.metrics.panics.Inc()
	s.opts.Logger.Printf("[ERROR] Recovered from panic answering a query: %v\n%s", v, debug.Stack())
	*out = nil
	if len(pkt) < dnswire.HeaderLen || dnswire.Flags(pkt)&dnswire.FlagQR != 0 {
		return
	}
	reply := make([]byte, dnswire.HeaderLen)
	copy(reply, pkt[:2])
	dnswire.SetFlags(reply, dnswire.Flags(pkt)&(0x7800|dnswire.FlagRD)|dnswire.FlagQR|dns.RcodeServerFailure)
	*out = reply
}
