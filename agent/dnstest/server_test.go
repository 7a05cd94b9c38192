package dnstest

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var testZone = MustZone(
	"example.org. 300 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 30",
	"www.example.org. 300 IN A 192.0.2.1",
	"www.example.org. 300 IN AAAA 2001:db8::1",
)

func exchange(t *testing.T, proto, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s: %v", proto, name, err)
	}
	return r
}

func TestZoneAnswers(t *testing.T) {
	s := NewServer(t, testZone.Handler())
	for _, tc := range []struct {
		name    string
		proto   string
		qname   string
		qtype   uint16
		rcode   int
		answers int
		soa     bool
	}{
		{name: "A over udp", proto: "udp", qname: "www.example.org.", qtype: dns.TypeA, answers: 1},
		{name: "AAAA over tcp", proto: "tcp", qname: "WWW.example.org.", qtype: dns.TypeAAAA, answers: 1},
		{name: "nodata", proto: "udp", qname: "www.example.org.", qtype: dns.TypeMX, soa: true},
		{name: "nxdomain", proto: "tcp", qname: "nope.example.org.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := exchange(t, tc.proto, s.Addr, tc.qname, tc.qtype)
			if r.Rcode != tc.rcode || len(r.Answer) != tc.answers || (len(r.Ns) == 1) != tc.soa {
				t.Fatalf("got rcode %d, %d answers, %d ns; want %d, %d, soa %v", r.Rcode, len(r.Answer), len(r.Ns), tc.rcode, tc.answers, tc.soa)
			}
			if tc.answers > 0 && r.Answer[0].Header().Name != tc.qname {
				t.Fatalf("answer owner %q, want the question's case %q", r.Answer[0].Header().Name, tc.qname)
			}
		})
	}
	if s.Count("udp") != 2 || s.Count("tcp") != 2 || s.Count("") != 4 {
		t.Fatalf("counts udp=%d tcp=%d", s.Count("udp"), s.Count("tcp"))
	}
	if got := len(s.Queries()); got != 4 {
		t.Fatalf("query log has %d entries, want 4", got)
	}
}

func TestTruncateAndOnlyTCP(t *testing.T) {
	s := NewServer(t, Truncate(testZone.Handler()))
	if r := exchange(t, "udp", s.Addr, "www.example.org.", dns.TypeA); !r.Truncated || len(r.Answer) != 0 {
		t.Fatalf("udp reply not truncated: %v", r)
	}
	if r := exchange(t, "tcp", s.Addr, "www.example.org.", dns.TypeA); r.Truncated || len(r.Answer) != 1 {
		t.Fatalf("tcp reply truncated or empty: %v", r)
	}
	s.SetHandler(OnlyTCP(testZone.Handler()))
	c := &dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	if _, _, err := c.Exchange(m, s.Addr); err == nil {
		t.Fatal("OnlyTCP answered over udp")
	}
}

func TestSpoofSendsForgeriesFirst(t *testing.T) {
	s := NewServer(t, Spoof(testZone.Handler()))
	conn, err := net.Dial("udp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion("www.example.org.", dns.TypeA)
	buf, _ := q.Pack()
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	var got []*dns.Msg
	if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	rb := make([]byte, 512)
	for len(got) < 6 {
		n, err := conn.Read(rb)
		if err != nil {
			t.Fatalf("after %d replies: %v", len(got), err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(rb[:n]); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	for i, m := range got {
		genuine := m.Id == q.Id && m.Response && len(m.Question) == 1 && m.Question[0] == q.Question[0]
		if genuine != (i == 5) {
			t.Fatalf("reply %d genuine=%v, want only the last one genuine: %v", i, genuine, m)
		}
	}
	if a := got[5].Answer[0].(*dns.A).A.String(); a != "192.0.2.1" {
		t.Fatalf("genuine reply carries %s", a)
	}
}

func TestTCPPipeliningOnOneConn(t *testing.T) {
	release := make(chan struct{})
	s := NewServer(t, Block(release, testZone.Handler()))
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	conn, err := c.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 3 {
		m := new(dns.Msg)
		m.SetQuestion("www.example.org.", dns.TypeA)
		m.Id = uint16(100 + i)
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if !s.WaitCount("tcp", 3, time.Second) {
		t.Fatalf("server saw %d tcp queries before answering any, want 3", s.Count("tcp"))
	}
	close(release)
	seen := map[uint16]bool{}
	for range 3 {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Id] = true
	}
	if len(seen) != 3 || s.Conns() != 1 {
		t.Fatalf("ids %v over %d conns", seen, s.Conns())
	}
}
