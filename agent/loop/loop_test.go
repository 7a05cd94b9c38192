package loop

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
)

var zone = dnstest.MustZone(
	"cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
	"web.default.svc.cluster.local. 30 IN A 192.0.2.1",
)

func newForwarder(t *testing.T, to string) *forward.Forwarder {
	t.Helper()
	f, err := forward.New(corefile.Forward{From: ".", To: []string{to}, MaxFails: 2},
		forward.Options{Timeout: 500 * time.Millisecond, AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// serveThrough makes s behave like the agent's server: every query goes
// through ex (the Probe), errors become SERVFAIL.
func serveThrough(ex func(context.Context, *dns.Msg) (*dns.Msg, error)) dnstest.Handler {
	return dnstest.Func(func(q *dnstest.Query) *dns.Msg {
		r, err := ex(context.Background(), q.Msg)
		if err != nil {
			r = new(dns.Msg)
			r.SetRcode(q.Msg, dns.RcodeServerFailure)
		}
		return r
	})
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		zone     string
		setup    func(t *testing.T, agent *dnstest.Server) string // returns the agent's upstream
		wantLoop bool
	}{
		{
			name: "upstream is the agent itself", zone: ".", wantLoop: true,
			setup: func(t *testing.T, agent *dnstest.Server) string { return agent.Addr },
		},
		{
			name: "upstream forwards back to the agent", zone: "cluster.local.", wantLoop: true,
			setup: func(t *testing.T, agent *dnstest.Server) string {
				back := newForwarder(t, agent.Addr)
				return dnstest.NewServer(t, serveThrough(back.Exchange)).Addr
			},
		},
		{
			name: "authoritative upstream", zone: "cluster.local.",
			setup: func(t *testing.T, _ *dnstest.Server) string { return dnstest.NewServer(t, zone.Handler()).Addr },
		},
		{
			name: "upstream down is not a loop", zone: ".",
			setup: func(t *testing.T, _ *dnstest.Server) string { return dnstest.NewServer(t, dnstest.Drop).Addr },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := dnstest.NewServer(t, dnstest.Drop)
			p := New(tc.zone, newForwarder(t, tc.setup(t, agent)))
			agent.SetHandler(serveThrough(p.Exchange))
			if !strings.HasSuffix(p.Name(), strings.TrimPrefix(tc.zone, ".")) || dns.CountLabel(p.Name()) != dns.CountLabel(tc.zone)+2 {
				t.Fatalf("probe name %q not <n>.<n>.%s", p.Name(), tc.zone)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			err := CheckAll(ctx, []*Probe{p})
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Fatalf("check took %v", d)
			}
			var le *Error
			if got := errors.As(err, &le); got != tc.wantLoop {
				t.Fatalf("loop detected = %v (%v), want %v", got, err, tc.wantLoop)
			}
			if tc.wantLoop && (le.Zone != tc.zone || le.Seen < 1 || !strings.Contains(err.Error(), le.Upstreams[0]) || !strings.Contains(err.Error(), "HINFO")) {
				t.Fatalf("unclear loop error: %v", err)
			}
		})
	}
}

func TestObserveAndPassThrough(t *testing.T) {
	up := dnstest.NewServer(t, zone.Handler())
	p := New("cluster.local.", newForwarder(t, up.Addr))
	for _, tc := range []struct {
		name  string
		qname string
		want  bool
	}{
		{name: "probe", qname: p.Name(), want: true},
		{name: "probe upper case", qname: strings.ToUpper(p.Name()), want: true},
		{name: "other name", qname: "web.default.svc.cluster.local.", want: false},
		{name: "probe suffix", qname: "x." + p.Name(), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.Seen()
			if got := p.Observe(tc.qname); got != tc.want {
				t.Fatalf("Observe(%q) = %v", tc.qname, got)
			}
			if tc.want != (p.Seen() == before+1) {
				t.Fatalf("seen went %d -> %d", before, p.Seen())
			}
		})
	}
	m := new(dns.Msg)
	m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	r, err := p.Exchange(context.Background(), m)
	if err != nil || len(r.Answer) != 1 || up.Count("") != 1 {
		t.Fatalf("ordinary query not forwarded: %v %v (upstream saw %d)", r, err, up.Count(""))
	}
	m.SetQuestion(p.Name(), dns.TypeHINFO)
	if _, err := p.Exchange(context.Background(), m); err == nil || up.Count("") != 1 {
		t.Fatalf("probe was forwarded again: %v (upstream saw %d)", err, up.Count(""))
	}
}
