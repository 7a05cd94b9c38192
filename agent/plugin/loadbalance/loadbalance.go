// Package loadbalance is CoreDNS's loadbalance plugin: round_robin (the A,
// AAAA and MX records of every successful reply in random order, CNAMEs
// first, addresses in preferred subnets first) and weighted (one address
// picked by the weights of a file first).
package loadbalance

import (
	"context"
	"io"
	"log"
	"math/rand/v2"
	"net/netip"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// LoadBalance shuffles replies.
type LoadBalance struct {
	prefer   []netip.Prefix
	weighted *weighted
}

// New returns the plugin. The weighted policy reads its file now and
// re-reads it until Close; logger receives its errors (nil: discarded).
func New(cfg corefile.LoadBalance, logger *log.Logger) (*LoadBalance, error) {
	lb := &LoadBalance{prefer: cfg.Prefer}
	if cfg.WeightFile != "" {
		if logger == nil {
			logger = log.New(io.Discard, "", 0)
		}
		w, err := newWeighted(cfg.WeightFile, cfg.WeightReload, logger)
		if err != nil {
			return nil, err
		}
		lb.weighted = w
	}
	return lb, nil
}

// Close stops re-reading the weight file.
func (lb *LoadBalance) Close() {
	if lb.weighted != nil {
		lb.weighted.close()
	}
}

// ServeDNS shuffles the reply of the rest of the chain, cache hits
// included.
func (lb *LoadBalance) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	m, err := next(ctx, r)
	if err != nil {
		return m, err
	}
	// CoreDNS's loadbalance writer passes every reply on, so it is named
	// as the writer of NXDOMAIN and other rcodes too (tests/compat).
	r.Writer = "loadbalance"
	if m.Rcode != dns.RcodeSuccess {
		return m, nil
	}
	if len(m.Question) > 0 && (m.Question[0].Qtype == dns.TypeAXFR || m.Question[0].Qtype == dns.TypeIXFR) {
		return m, nil
	}
	if lb.weighted != nil {
		switch r.QType() {
		case dns.TypeA, dns.TypeAAAA, dns.TypeSRV:
			m.Answer = lb.weighted.reorder(m.Answer)
			m.Extra = lb.weighted.reorder(m.Extra)
		}
		r.Writer = "loadbalance"
		return m, nil
	}
	m.Answer = shuffle(m.Answer)
	m.Ns = shuffle(m.Ns)
	m.Extra = shuffle(m.Extra)
	if len(lb.prefer) > 0 {
		m.Answer = prefer(m.Answer, lb.prefer)
		m.Extra = prefer(m.Extra, lb.prefer)
	}
	r.Writer = "loadbalance"
	return m, nil
}

// split sorts records into CNAMEs, addresses, MX and the rest.
func split(in []dns.RR) (cname, addr, mx, rest []dns.RR) {
	for _, rr := range in {
		switch rr.Header().Rrtype {
		case dns.TypeCNAME:
			cname = append(cname, rr)
		case dns.TypeA, dns.TypeAAAA:
			addr = append(addr, rr)
		case dns.TypeMX:
			mx = append(mx, rr)
		default:
			rest = append(rest, rr)
		}
	}
	return
}

// shuffle orders records as CoreDNS's round_robin: CNAMEs, the rest, then
// the addresses and the MX records, each shuffled.
func shuffle(in []dns.RR) []dns.RR {
	if len(in) == 0 {
		return in
	}
	cname, addr, mx, rest := split(in)
	rand.Shuffle(len(addr), func(i, j int) { addr[i], addr[j] = addr[j], addr[i] })
	rand.Shuffle(len(mx), func(i, j int) { mx[i], mx[j] = mx[j], mx[i] })
	out := make([]dns.RR, 0, len(in))
	out = append(append(append(append(out, cname...), rest...), addr...), mx...)
	return out
}

// prefer moves the addresses in the subnets first (in the subnets' order)
// and orders the records CNAMEs, addresses, MX, the rest, as CoreDNS does.
func prefer(in []dns.RR, subnets []netip.Prefix) []dns.RR {
	if len(in) == 0 {
		return in
	}
	cname, addr, mx, rest := split(in)
	seen := make([]bool, len(addr))
	sorted := make([]dns.RR, 0, len(addr))
	for _, p := range subnets {
		for i, rr := range addr {
			if !seen[i] && p.Contains(addrOf(rr)) {
				sorted = append(sorted, rr)
				seen[i] = true
			}
		}
	}
	for i, rr := range addr {
		if !seen[i] {
			sorted = append(sorted, rr)
		}
	}
	out := make([]dns.RR, 0, len(in))
	return append(append(append(append(out, cname...), sorted...), mx...), rest...)
}

func addrOf(rr dns.RR) netip.Addr {
	var a netip.Addr
	switch v := rr.(type) {
	case *dns.A:
		a, _ = netip.AddrFromSlice(v.A)
	case *dns.AAAA:
		a, _ = netip.AddrFromSlice(v.AAAA)
	}
	return a.Unmap()
}
