package server

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// The type label: each of CoreDNS's monitored types has a slot of its own
// named after it, every other type shares the last slot, "other".
func TestTypeSlots(t *testing.T) {
	// CoreDNS's plugin/metrics/vars monitorType set.
	coredns := []uint16{
		dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeAXFR, dns.TypeCNAME, dns.TypeDNSKEY,
		dns.TypeDS, dns.TypeHTTPS, dns.TypeIXFR, dns.TypeMX, dns.TypeNS, dns.TypeNSEC,
		dns.TypeNSEC3, dns.TypePTR, dns.TypeRRSIG, dns.TypeSOA, dns.TypeSRV, dns.TypeTXT,
	}
	if numTypes != len(coredns)+1 {
		t.Fatalf("numTypes = %d, want %d (CoreDNS's monitored types + other)", numTypes, len(coredns)+1)
	}
	seen := map[int]uint16{}
	for _, qt := range coredns {
		i := typeIndex(qt)
		if i < 0 || i >= numTypes-1 {
			t.Errorf("typeIndex(%s) = %d, want a slot of its own below %d", dns.TypeToString[qt], i, numTypes-1)
			continue
		}
		if prev, dup := seen[i]; dup {
			t.Errorf("typeIndex(%s) = %d, the slot of %s", dns.TypeToString[qt], i, dns.TypeToString[prev])
		}
		seen[i] = qt
		if got := typeName(i); got != dns.TypeToString[qt] {
			t.Errorf("typeName(typeIndex(%s)) = %q", dns.TypeToString[qt], got)
		}
	}
	for _, qt := range []uint16{0, dns.TypeCAA, dns.TypeNAPTR, dns.TypeSVCB, dns.TypeOPT, 65535} {
		if i := typeIndex(qt); i != numTypes-1 || typeName(i) != "other" {
			t.Errorf("type %d: slot %d (%q), want %d (\"other\")", qt, i, typeName(i), numTypes-1)
		}
	}
}

// durationLabels are one child's labels of both histograms below.
var durationLabels = [][]string{
	{"dns://:53", "cluster.local.", ""},
	{"dns://:53", ".", ""},
}

// TestDurationHistExposition feeds the hand-written histogram (observeN,
// the batching the UDP readers rely on) and a prometheus.HistogramVec with
// the same name, help, labels and buckets the same observations, and wants
// the same text exposition: names, labels, every cumulative bucket, count
// and sum. Values on bucket bounds, below the first, above the last and 0
// are included; batched values are binary fractions, so that n additions and
// one multiplication give the same sum.
func TestDurationHistExposition(t *testing.T) {
	obs := []struct {
		child int
		v     float64
		n     uint64
	}{
		{0, 0, 1},
		{0, 0.00025, 1}, // the first bound: in le="0.00025"
		{0, 0.000244140625, 7},
		{0, 0.001, 1}, // a bound
		{0, 0.0009765625, 3},
		{0, 0.0078125, 32},
		{0, 0.5, 5},
		{0, 8.192, 1}, // the last bound
		{0, 16, 2},    // +Inf only
		{1, 0.03125, 4},
		{1, 1.5, 1},
	}
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ours := m.duration
	ref := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "coredns_dns_request_duration_seconds",
		Help:    "Histogram of the time (in seconds) each request took per zone.",
		Buckets: promreg.TimeBuckets(),
	}, []string{"server", "zone", "view"})
	for _, o := range obs {
		ours.child(durationLabels[o.child]...).observeN(o.v, o.n)
		for range o.n {
			ref.WithLabelValues(durationLabels[o.child]...).Observe(o.v)
		}
	}
	got, want := exposition(t, ours), exposition(t, ref)
	if got != want {
		t.Errorf("exposition differs from prometheus.Histogram's\n--- histVec:\n%s\n--- prometheus.HistogramVec:\n%s", got, want)
	}
	if !strings.Contains(want, `le="0.00025"} 9`) || !strings.Contains(want, "_count{") {
		t.Fatalf("the reference exposition is not what the test expects:\n%s", want)
	}
}

// exposition returns c's metrics in the Prometheus text format, as /metrics
// serves them from a registry.
func exposition(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// BenchmarkDurationHist isolates the hand-written histogram against a
// prometheus.Histogram child: a batch of 32 answers observed with one value
// (what a UDP reader's tally does per sendmmsg batch), by every core at once.
// ns/answer is the cost per observation; compare the two sub-benchmarks.
func BenchmarkDurationHist(b *testing.B) {
	const batch = 32
	report := func(b *testing.B) {
		b.Helper()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/answer")
	}
	b.Run("hist.observeN", func(b *testing.B) {
		m, err := NewMetrics(nil)
		if err != nil {
			b.Fatal(err)
		}
		h := m.duration.child(durationLabels[0]...)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.observeN(0.0003, batch)
			}
		})
		report(b)
	})
	b.Run("prometheus.Histogram.Observe", func(b *testing.B) {
		o := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coredns_dns_request_duration_seconds", Help: "h", Buckets: promreg.TimeBuckets(),
		}, []string{"server", "zone", "view"}).WithLabelValues(durationLabels[0]...)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				for range batch {
					o.Observe(0.0003)
				}
			}
		})
		report(b)
	})
}
