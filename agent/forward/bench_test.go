package forward

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

// BenchmarkExchange measures cache misses through the forwarder: distinct
// names (no coalescing) from parallel callers, against an in-process
// upstream, over pipelined TCP and over UDP.
func BenchmarkExchange(b *testing.B) {
	wild := dnstest.Func(func(q *dnstest.Query) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q.Msg)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Msg.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: []byte{10, 0, 0, 1}}}
		return m
	})
	for _, tc := range []struct {
		name     string
		forceTCP bool
	}{
		{name: "tcp", forceTCP: true},
		{name: "udp"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := dnstest.Start("127.0.0.1:0", wild)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			f, err := New(corefile.Forward{From: ".", To: []string{s.Addr}, ForceTCP: tc.forceTCP}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m := new(dns.Msg)
					m.SetQuestion("m"+strconv.FormatInt(n.Add(1), 10)+".miss.cluster.local.", dns.TypeA)
					if _, err := f.Exchange(context.Background(), m); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
