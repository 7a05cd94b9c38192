// Package dns64 is CoreDNS's dns64 plugin: AAAA answers synthesized from
// A records (RFC 6147) for clients on IPv6 (or all, with allow_ipv4).
package dns64

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Metrics is coredns_dns64_requests_translated_total.
type Metrics struct{ translated *prometheus.CounterVec }

// NewMetrics registers the dns64 counter with reg (nil: unregistered), or
// reuses the one registered there before.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c, err := promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coredns", Subsystem: "dns64", Name: "requests_translated_total",
		Help: "Counter of DNS requests translated by dns64.",
	}, []string{"server"}))
	if err != nil {
		return nil, err
	}
	return &Metrics{translated: c}, nil
}

// DNS64 synthesizes AAAA answers.
type DNS64 struct {
	cfg corefile.DNS64
	m   *Metrics
}

// New returns the plugin; m may be nil.
func New(cfg corefile.DNS64, m *Metrics) *DNS64 { return &DNS64{cfg: cfg, m: m} }

// ServeDNS lets the chain answer an AAAA query and, when the answer has no
// AAAA records and is not a name error, answers with the name's A records
// translated into the prefix.
func (d *DNS64) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	q := r.Msg.Question[0]
	if !d.cfg.AllowIPv4 && r.Family() == 1 || q.Qtype != dns.TypeAAAA || q.Qclass != dns.ClassINET {
		return next(ctx, r)
	}
	m, err := next(ctx, r)
	if err != nil || !d.translate(m) {
		return m, err
	}
	if r.Lookup == nil {
		return nil, plugin.Fail(dns.RcodeServerFailure, fmt.Errorf("dns64: no lookup"))
	}
	a, err := r.Lookup(ctx, r.Name(), dns.TypeA)
	if err != nil {
		return nil, plugin.Fail(dns.RcodeServerFailure, err)
	}
	out := d.synthesize(r.Msg, m, a)
	if d.m != nil {
		d.m.translated.WithLabelValues(r.Server).Inc()
	}
	r.Writer = "dns64"
	return out, nil
}

// translate reports whether the answer m to an AAAA query calls for
// synthesis: not a name error (NXDOMAIN with an SOA), and no AAAA records
// unless translate_all.
func (d *DNS64) translate(m *dns.Msg) bool {
	if m.Rcode == dns.RcodeNameError {
		for _, rr := range m.Ns {
			if rr.Header().Rrtype == dns.TypeSOA {
				return false
			}
		}
	}
	if d.cfg.TranslateAll {
		return true
	}
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == dns.TypeAAAA {
			return false
		}
	}
	return true
}

// synthesize is the reply to req from the A answer a: its records with A
// records turned into AAAA ones, whose TTL is at most the SOA's of the
// original answer (600 without one), and a's other sections.
func (d *DNS64) synthesize(req, orig, a *dns.Msg) *dns.Msg {
	out := new(dns.Msg)
	out.SetReply(req)
	out.Truncated = a.Truncated
	out.Extra = a.Extra
	out.Ns = a.Ns
	soaTTL := uint32(600)
	for _, rr := range orig.Ns {
		if rr.Header().Rrtype == dns.TypeSOA {
			soaTTL = rr.Header().Ttl
		}
	}
	out.Answer = make([]dns.RR, 0, len(a.Answer))
	for _, rr := range a.Answer {
		ar, ok := rr.(*dns.A)
		if !ok {
			out.Answer = append(out.Answer, rr)
			continue
		}
		h := ar.Hdr
		out.Answer = append(out.Answer, &dns.AAAA{
			Hdr:  dns.RR_Header{Name: h.Name, Rrtype: dns.TypeAAAA, Class: h.Class, Ttl: min(h.Ttl, soaTTL)},
			AAAA: net.IP(to6(d.cfg.Prefix, ar.A).AsSlice()),
		})
	}
	return out
}

// to6 embeds an IPv4 address in the prefix as RFC 6052 does (bits 64-71
// stay zero).
func to6(prefix netip.Prefix, ip net.IP) netip.Addr {
	v4 := ip.To4()
	if v4 == nil {
		return netip.Addr{}
	}
	v6 := prefix.Addr().As16()
	i, j := prefix.Bits()/8, 0
	for ; i < 8 && j < 4; i, j = i+1, j+1 {
		v6[i] = v4[j]
	}
	if i == 8 {
		i++
	}
	for ; j < 4; i, j = i+1, j+1 {
		v6[i] = v4[j]
	}
	return netip.AddrFrom16(v6)
}
