package dnstest

import (
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Drop never answers.
func Drop(*Writer, *Query) {}

// Func adapts a function that builds one reply (nil drops the query) into a
// Handler.
func Func(f func(q *Query) *dns.Msg) Handler {
	return func(w *Writer, q *Query) {
		if m := f(q); m != nil {
			_ = w.Write(m)
		}
	}
}

// Rcode answers every query with an empty reply carrying rcode.
func Rcode(rcode int) Handler {
	return Func(func(q *Query) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q.Msg, rcode)
		return m
	})
}

// Zone is an authoritative answer table built from RR strings.
type Zone struct {
	soa     dns.RR
	records map[string][]dns.RR // key: lower-case owner name
}

// NewZone parses records (zone-file syntax, one RR per string). The first
// SOA among them is used in the authority section of denials; without one a
// SOA for the first record's parent is synthesized with minimum TTL 60.
func NewZone(records ...string) (*Zone, error) {
	z := &Zone{records: map[string][]dns.RR{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			return nil, fmt.Errorf("dnstest: record %q: %w", s, err)
		}
		if rr == nil {
			continue
		}
		if _, ok := rr.(*dns.SOA); ok && z.soa == nil {
			z.soa = rr
		}
		name := strings.ToLower(rr.Header().Name)
		z.records[name] = append(z.records[name], rr)
	}
	if z.soa == nil {
		apex := "."
		for name := range z.records {
			if i, end := dns.NextLabel(name, 0); !end {
				apex = name[i:]
			}
			break
		}
		soa, err := dns.NewRR(apex + " 60 IN SOA ns." + strings.TrimPrefix(apex, ".") + " host. 1 3600 600 86400 60")
		if err != nil {
			return nil, fmt.Errorf("dnstest: synthesize SOA: %w", err)
		}
		z.soa = soa
	}
	return z, nil
}

// MustZone is NewZone that panics on a bad record; for tests with literal
// records only.
func MustZone(records ...string) *Zone {
	z, err := NewZone(records...)
	if err != nil {
		panic(err)
	}
	return z
}

// Reply builds the authoritative reply to req: the matching records,
// NODATA (NOERROR with the SOA) when the name exists without that type, or
// NXDOMAIN with the SOA.
func (z *Zone) Reply(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	rrs, ok := z.records[strings.ToLower(q.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{dns.Copy(z.soa)}
		return m
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
			c := dns.Copy(rr)
			c.Header().Name = q.Name
			m.Answer = append(m.Answer, c)
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{dns.Copy(z.soa)}
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	return m
}

// Handler answers from the zone.
func (z *Zone) Handler() Handler {
	return Func(func(q *Query) *dns.Msg { return z.Reply(q.Msg) })
}

// Truncate answers UDP queries with an empty reply that has the TC bit set
// and passes TCP queries to h.
func Truncate(h Handler) Handler {
	return func(w *Writer, q *Query) {
		if q.Proto == "tcp" {
			h(w, q)
			return
		}
		m := new(dns.Msg)
		m.SetReply(q.Msg)
		m.Truncated = true
		_ = w.Write(m)
	}
}

// OnlyTCP drops UDP queries and passes TCP queries to h, like a cluster DNS
// whose UDP port is filtered.
func OnlyTCP(h Handler) Handler {
	return func(w *Writer, q *Query) {
		if q.Proto == "tcp" {
			h(w, q)
		}
	}
}

// Delay waits d before passing the query to h (and drops it if the server
// closes meanwhile).
func Delay(d time.Duration, h Handler) Handler {
	return func(w *Writer, q *Query) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			h(w, q)
		case <-w.Done():
		}
	}
}

// Block holds every query until release is closed, then passes it to h.
// Held queries are dropped when the server closes, so a failed test that
// never releases them does not hang.
func Block(release <-chan struct{}, h Handler) Handler {
	return func(w *Writer, q *Query) {
		select {
		case <-release:
			h(w, q)
		case <-w.Done():
		}
	}
}

// Spoofed returns copies of the reply r to req that must all be rejected
// by a resolver: a wrong ID, a wrong name, a wrong type, a wrong class and a
// reply without the QR bit.
func Spoofed(req, r *dns.Msg) []*dns.Msg {
	var out []*dns.Msg
	bad := r.Copy()
	bad.Id = req.Id + 1
	out = append(out, bad)
	if len(req.Question) == 1 {
		bad = r.Copy()
		bad.Question[0].Name = "spoofed." + req.Question[0].Name
		out = append(out, bad)
		bad = r.Copy()
		bad.Question[0].Qtype = req.Question[0].Qtype + 1
		out = append(out, bad)
		bad = r.Copy()
		bad.Question[0].Qclass = dns.ClassCHAOS
		out = append(out, bad)
	}
	bad = r.Copy()
	bad.Response = false
	out = append(out, bad)
	return out
}

// Spoof sends the forged variants of h's reply (see Spoofed) before the
// genuine one. Their answers carry the address 6.6.6.6 instead of h's.
func Spoof(h Handler) Handler {
	return spoof(h, true)
}

// SpoofOnly sends only the forged variants of h's reply, never the genuine
// one, so a careful client times out.
func SpoofOnly(h Handler) Handler {
	return spoof(h, false)
}

func spoof(h Handler, genuine bool) Handler {
	return func(w *Writer, q *Query) {
		rec := &recorder{}
		h(&Writer{q: q, rec: rec, done: w.done}, q)
		for _, r := range rec.msgs {
			forged := r.Copy()
			for i, rr := range forged.Answer {
				if a, ok := rr.(*dns.A); ok {
					c := *a
					c.A = []byte{6, 6, 6, 6}
					forged.Answer[i] = &c
				}
			}
			for _, bad := range Spoofed(q.Msg, forged) {
				_ = w.Write(bad)
			}
			if genuine {
				_ = w.Write(r)
			}
		}
	}
}

// recorder captures the replies of a wrapped handler.
type recorder struct {
	msgs []*dns.Msg
}
