// Package whoami is CoreDNS's whoami plugin: it answers with the client's
// address (an A or AAAA record) and port and transport (an SRV record
// _udp.NAME or _tcp.NAME), in the additional section.
package whoami

import (
	"context"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// Whoami answers every query it gets.
type Whoami struct{}

// ServeDNS answers; it never calls next.
func (Whoami) ServeDNS(_ context.Context, r *plugin.Request, _ plugin.Next) (*dns.Msg, error) {
	q := r.Msg.Question[0]
	m := plugin.Reply(r.Msg)
	ip := r.Client.Addr().Unmap()
	var rr dns.RR
	if ip.Is4() {
		rr = &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: q.Qclass}, A: ip.AsSlice()}
	} else {
		rr = &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: q.Qclass}, AAAA: ip.AsSlice()}
	}
	srvName := "_" + r.Proto() + "." + q.Name
	if q.Name == "." {
		srvName = "_" + r.Proto() + "."
	}
	srv := &dns.SRV{Hdr: dns.RR_Header{Name: srvName, Rrtype: dns.TypeSRV, Class: q.Qclass}, Port: r.Client.Port(), Target: "."}
	m.Extra = []dns.RR{rr, srv}
	r.Writer = "whoami"
	return m, nil
}
