package compat

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TTLSlack is the TTL rule of the comparison: the TTLs of the two answers
// may differ by at most this many seconds. The two servers are asked one
// after the other, so a countdown can cross a second boundary in one of
// them and not in the other; every other TTL difference (a cap, a minimum,
// a countdown that does not run) is a difference.
const TTLSlack = 1

// Diff is one difference between the agent's and CoreDNS's answers.
type Diff struct {
	// Field names what differs: a header flag ("AA", "RA", "rcode"), a
	// section ("answer", "authority", "additional"), "TTL" or an OPT
	// field ("OPT", "OPT.size", "OPT.do", "OPT.options").
	Field        string
	Agent, Other string
}

func (d Diff) String() string {
	return fmt.Sprintf("%s: agent %s, coredns %s", d.Field, d.Agent, d.Other)
}

// DiffMsg compares the agent's reply a with CoreDNS's reply c: rcode,
// opcode, every header flag, the question, the answer, authority and
// additional sections (records compared with TTLs zeroed, then the TTLs
// with TTLSlack) and the OPT record (presence, UDP size, DO, options).
func DiffMsg(a, c *dns.Msg) []Diff {
	var out []Diff
	add := func(field string, av, cv any) {
		as, cs := fmt.Sprint(av), fmt.Sprint(cv)
		if as != cs {
			out = append(out, Diff{field, as, cs})
		}
	}
	add("id", a.Id, c.Id)
	add("rcode", dns.RcodeToString[a.Rcode], dns.RcodeToString[c.Rcode])
	add("opcode", a.Opcode, c.Opcode)
	add("QR", a.Response, c.Response)
	add("AA", a.Authoritative, c.Authoritative)
	add("TC", a.Truncated, c.Truncated)
	add("RD", a.RecursionDesired, c.RecursionDesired)
	add("RA", a.RecursionAvailable, c.RecursionAvailable)
	add("Z", a.Zero, c.Zero)
	add("AD", a.AuthenticatedData, c.AuthenticatedData)
	add("CD", a.CheckingDisabled, c.CheckingDisabled)
	add("question", a.Question, c.Question)
	for _, s := range []struct {
		name string
		a, c []dns.RR
	}{{"answer", a.Answer, c.Answer}, {"authority", a.Ns, c.Ns}, {"additional", withoutOPT(a.Extra), withoutOPT(c.Extra)}} {
		at, ct := rrStrings(s.a), rrStrings(s.c)
		if strings.Join(at, "\n") != strings.Join(ct, "\n") {
			out = append(out, Diff{s.name, strings.Join(at, " | "), strings.Join(ct, " | ")})
			continue
		}
		for i := range s.a {
			ta, tc := int64(s.a[i].Header().Ttl), int64(s.c[i].Header().Ttl)
			if ta-tc > TTLSlack || tc-ta > TTLSlack {
				out = append(out, Diff{"TTL", fmt.Sprintf("%d (%s)", ta, at[i]), fmt.Sprint(tc)})
				break
			}
		}
	}
	ao, co := a.IsEdns0(), c.IsEdns0()
	switch {
	case ao == nil && co == nil:
	case ao == nil || co == nil:
		add("OPT", ao != nil, co != nil)
	default:
		add("OPT.size", ao.UDPSize(), co.UDPSize())
		add("OPT.do", ao.Do(), co.Do())
		add("OPT.version", ao.Version(), co.Version())
		add("OPT.options", ao.Option, co.Option)
	}
	return out
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// rrStrings renders records with their TTL zeroed.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		cp := dns.Copy(rr)
		cp.Header().Ttl = 0
		out[i] = cp.String()
	}
	return out
}

// Family is one exported metric family: its type, its label names (the
// union over its series) and its series (labels rendered with the local
// IP replaced by "IP") with their values (counters and gauges: the value;
// histograms and summaries: the count).
type Family struct {
	Type   string
	Labels []string
	Series map[string]float64
}

// ScrapeFamilies fetches http://addr/metrics and parses it. ip is replaced
// by "IP" in label values, so that the two servers' series compare (and
// a second local IP, "ip,ip2", by "IP2").
func ScrapeFamilies(addr, ip string) (map[string]*Family, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	return ParseFamilies(resp.Body, ip)
}

// ParseFamilies parses the Prometheus text format.
func ParseFamilies(r io.Reader, ip string) (map[string]*Family, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	out := map[string]*Family{}
	for name, mf := range mfs {
		f := &Family{Type: strings.ToLower(mf.GetType().String()), Series: map[string]float64{}}
		names := map[string]bool{}
		for _, m := range mf.Metric {
			var parts []string
			for _, l := range m.Label {
				names[l.GetName()] = true
				v := l.GetValue()
				if ip != "" {
					first, second, two := strings.Cut(ip, ",")
					if two {
						v = strings.ReplaceAll(v, second, "IP2")
					}
					v = strings.ReplaceAll(v, first, "IP")
				}
				parts = append(parts, l.GetName()+"="+v)
			}
			sort.Strings(parts)
			f.Series[strings.Join(parts, ",")] = value(mf.GetType(), m)
		}
		for n := range names {
			f.Labels = append(f.Labels, n)
		}
		sort.Strings(f.Labels)
		out[name] = f
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	case dto.MetricType_SUMMARY:
		return float64(m.GetSummary().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}
