// Package plugintest helps test the answer-changing plugins: it parses a
// server block's configuration from Corefile text and runs a handler on a
// query with a recording next plugin.
package plugintest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// Server parses text (one server block) and returns the block.
func Server(t testing.TB, text string) corefile.Server {
	t.Helper()
	cfg, err := corefile.Parse(text, corefile.ParseOptions{ReadFile: func(string) ([]byte, error) { return []byte("nameserver 127.0.0.1\n"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Servers[0]
}

// Next is a next plugin that records its calls and answers with Reply (or
// an empty NOERROR reply).
type Next struct {
	Calls int
	// Seen is the question the last call saw.
	Seen dns.Question
	// Reply, when set, makes the answer to a query.
	Reply func(req *dns.Msg) *dns.Msg
}

// Serve is the plugin.Next.
func (n *Next) Serve(_ context.Context, r *plugin.Request) (*dns.Msg, error) {
	n.Calls++
	n.Seen = r.Msg.Question[0]
	if n.Reply != nil {
		return n.Reply(r.Msg), nil
	}
	m := new(dns.Msg)
	m.SetReply(r.Msg)
	return m, nil
}

// Query is a request for name and qtype from client (default 10.0.0.9:5353
// over UDP) with EDNS0.
func Query(name string, qtype uint16, client string) *plugin.Request {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	if client == "" {
		client = "10.0.0.9:5353"
	}
	return &plugin.Request{Msg: m, Client: netip.MustParseAddrPort(client), Server: "dns://:53"}
}

// Run runs h on r with next and returns the reply or the rcode-only error.
func Run(h plugin.Handler, r *plugin.Request, next *Next) (*dns.Msg, error) {
	return h.ServeDNS(context.Background(), r, next.Serve)
}

// RRs renders records as strings, for comparisons.
func RRs(rrs []dns.RR) []string {
	out := []string{}
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, rr.String())
	}
	return out
}
