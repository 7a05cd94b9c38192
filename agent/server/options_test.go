package server

import (
	"log"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

// lineLog is a logger whose lines a test reads.
type lineLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lineLog) logger() *log.Logger {
	return log.New(writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.buf.Write(p)
	}), "", 0)
}

func (l *lineLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitLines returns the lines once there are at least n, or after 5 s:
// a loaded machine may run a timer's report late.
func (l *lineLog) waitLines(n int) []string {
	deadline := time.Now().Add(5 * time.Second)
	for len(l.lines()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return l.lines()
}

func TestLogRules(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	var out lineLog
	rules := NewLogRules([]corefile.LogRule{
		{Name: "www.example.", Format: `{name} {type} {class} {proto} {rcode} {>opcode} {>id} {/meta} {unknown} "{remote}"`},
		{Name: "example.", Format: corefile.CommonLogFormat, Classes: []string{"denial"}},
	})
	_, addr := startWith(t, Options{Logger: out.logger()}, []string{"udp"},
		&Block{Zones: []string{"."}, Log: true, LogRules: rules, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	for _, name := range []string{"WWW.example.", "nope.example.", "example.", "other.org."} {
		m := q(name, dns.TypeA)
		if name == "example." {
			m = q(name, dns.TypeSOA) // success: not logged by the denial rule
		}
		m.Id = 77
		exchange(t, "udp", addr, m)
	}
	lines := out.lines()
	if len(lines) != 2 {
		t.Fatalf("log lines %q, want 2 (www.example by the first rule, nope.example as denial by the second)", lines)
	}
	if want := `[INFO] www.example. A IN udp NOERROR 0 77 - {unknown} "127.0.0.1"`; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if !strings.Contains(lines[1], ` - 77 "A IN nope.example. udp `) || !strings.Contains(lines[1], `" NXDOMAIN qr`) {
		t.Errorf("second line %q: not nope.example in the common format", lines[1])
	}
}

func TestAnswerClass(t *testing.T) {
	soa, _ := dns.NewRR("example. 60 IN SOA ns.example. h.example. 1 2 3 4 60")
	ns, _ := dns.NewRR("sub.example. 60 IN NS ns.sub.example.")
	a, _ := dns.NewRR("www.example. 60 IN A 192.0.2.1")
	for _, tc := range []struct {
		name string
		m    *dns.Msg
		want uint8
	}{
		{"answer", &dns.Msg{Answer: []dns.RR{a}}, classSuccess},
		{"referral", &dns.Msg{Ns: []dns.RR{ns}}, classSuccess},
		{"nodata", &dns.Msg{Ns: []dns.RR{soa}}, classDenial},
		{"empty", &dns.Msg{}, classDenial},
		{"nxdomain", &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError}}, classDenial},
		{"servfail", &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}}, classError},
		{"refused", &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeRefused}}, classError},
	} {
		if got := answerClass(tc.m); got != tc.want {
			t.Errorf("%s: class %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestErrorConsolidation(t *testing.T) {
	var out lineLog
	l, err := NewErrorLog(out.logger(), []corefile.ErrorRule{
		{Duration: 100 * time.Millisecond, Pattern: "i/o timeout$", Level: "warning"},
		{Duration: 100 * time.Millisecond, Pattern: "timeout", Level: "info"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{Logger: out.logger()}}
	b := &Block{Errors: true, ErrorLog: l}
	req := q("www.example.", dns.TypeA)
	for _, e := range []string{"read udp: i/o timeout", "read tcp: i/o timeout", "timeout waiting", "connection refused", "read udp: i/o timeout"} {
		s.reportError(b, req, errString(e))
	}
	got := out.waitLines(3)
	want := []string{
		"[ERROR] plugin/forward: www.example. A: connection refused",
		"[INFO] plugin/errors: 1 errors like 'timeout' occurred in last 100ms",
		"[WARNING] plugin/errors: 3 errors like 'i/o timeout$' occurred in last 100ms",
	}
	if len(got) != 3 || got[0] != want[0] || !(got[1] == want[1] && got[2] == want[2] || got[1] == want[2] && got[2] == want[1]) {
		t.Fatalf("lines %q, want %q (the two summaries in any order)", got, want)
	}
	// A new window starts after the report.
	s.reportError(b, req, errString("x i/o timeout"))
	if got := out.waitLines(4); len(got) != 4 || !strings.HasPrefix(got[3], "[WARNING] plugin/errors: 1 errors like") {
		t.Fatalf("lines %q, want a fourth summary of 1", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestBufSize(t *testing.T) {
	_, f := upstream(t, bigZone().Handler())
	_, addr := start(t, nil, &Block{Zones: []string{"."}, BufSize: 512, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	for i, tc := range []struct {
		netw  string
		trunc bool
	}{{"udp", true}, {"udp", true}, {"tcp", false}} { // a miss, a hit, then TCP
		m := q("big.example.", dns.TypeTXT)
		m.SetEdns0(4096, false)
		r := exchange(t, tc.netw, addr, m)
		r.Compress = true // the size on the wire: a truncated reply keeps the records that fit, compressed
		if r.Truncated != tc.trunc || r.Len() > 512 && tc.trunc {
			t.Fatalf("query %d over %s: truncated %v, %d bytes; want truncated %v within 512", i, tc.netw, r.Truncated, r.Len(), tc.trunc)
		}
		if !tc.trunc && len(r.Answer) != 40 {
			t.Fatalf("tcp: %d records, want 40", len(r.Answer))
		}
	}
}

func TestKeepTTLOnHitPath(t *testing.T) {
	for _, keep := range []bool{false, true} {
		cfg := cacheCfg()
		cfg.KeepTTL = keep
		clk := time.Unix(1e9, 0)
		c := cache.New(cfg, cache.Options{Now: func() time.Time { return clk }})
		s, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetBlocks([]*Block{{Zones: []string{"."}, Port: 53, BufSize: 1232, Cache: c, Forward: fakeUpstream{}}}); err != nil {
			t.Fatal(err)
		}
		m := q("host.example.", dns.TypeA)
		m.SetEdns0(4096, false)
		pkt, _ := m.Pack()
		resp, _ := fakeUpstream{}.Exchange(nil, m) //nolint:staticcheck // fakeUpstream ignores the context
		if err := c.Set(msgKey(m), resp); err != nil {
			t.Fatal(err)
		}
		clk = clk.Add(20 * time.Second)
		var h hitPath
		h.init(s, false, false)
		zones := s.table.Load().zonesFor(netip.MustParseAddrPort("127.0.0.1:53"))
		dst := make([]byte, 0, outBufSize)
		out, v := h.handle(dst, pkt, zones, 0)
		if v != verdictReply {
			t.Fatalf("keepttl %v: verdict %d, want a hit", keep, v)
		}
		var r dns.Msg
		if err := r.Unpack(out); err != nil {
			t.Fatal(err)
		}
		want := uint32(40)
		if keep {
			want = 60
		}
		if ttl := r.Answer[0].Header().Ttl; ttl != want {
			t.Errorf("keepttl %v: TTL %d, want %d", keep, ttl, want)
		}
		allocs := testing.AllocsPerRun(200, func() { _, _ = h.handle(dst[:0], pkt, zones, 0) })
		if allocs != 0 {
			t.Errorf("keepttl %v, bufsize: hit path allocates %v times per query", keep, allocs)
		}
	}
}

func TestServeStaleModes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		verify    bool
		upstream  dnstest.Handler
		wantAddr  string
		wantTTL   uint32
		refreshed bool // a later query sees the new answer
	}{
		{name: "immediate: stale at once, refreshed behind", upstream: newAnswer, wantAddr: "192.0.2.1", wantTTL: 0, refreshed: true},
		{name: "verify: the upstream's new answer", verify: true, upstream: newAnswer, wantAddr: "192.0.2.99", wantTTL: 300},
		{name: "verify: stale when the upstream fails", verify: true, upstream: dnstest.Rcode(dns.RcodeServerFailure), wantAddr: "192.0.2.1", wantTTL: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, f := upstream(t, zone.Handler())
			cfg := cacheCfg()
			cfg.ServeStale, cfg.ServeStaleVerify = time.Hour, tc.verify
			var mu sync.Mutex
			clk := time.Now()
			c := cache.New(cfg, cache.Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }})
			_, addr := start(t, nil, &Block{Zones: []string{"."}, Cache: c, Forward: f})
			exchange(t, "udp", addr, q("www.example.", dns.TypeA))
			mu.Lock()
			clk = clk.Add(400 * time.Second) // expired 100 s ago
			mu.Unlock()
			up.SetHandler(tc.upstream)
			r := exchange(t, "udp", addr, q("www.example.", dns.TypeA))
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tc.wantAddr || r.Answer[0].Header().Ttl != tc.wantTTL {
				t.Fatalf("answer %v, want %s with TTL %d", r.Answer, tc.wantAddr, tc.wantTTL)
			}
			if !tc.refreshed {
				return
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				r := exchange(t, "udp", addr, q("www.example.", dns.TypeA))
				if len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "192.0.2.99" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not refreshed behind the stale answer: %v", r.Answer)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// newAnswer answers www.example. with 192.0.2.99.
var newAnswer = dnstest.MustZone("www.example. 300 IN A 192.0.2.99").Handler()

func TestTCPTimeoutsPlugin(t *testing.T) {
	s, err := New(Options{TCPIdleTimeout: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	check := func(first, next, write time.Duration) {
		t.Helper()
		if got := [3]time.Duration{s.readTimeout(true), s.readTimeout(false), s.writeTimeout()}; got != [3]time.Duration{first, next, write} {
			t.Errorf("timeouts %v, want %v", got, [3]time.Duration{first, next, write})
		}
	}
	check(7*time.Second, 7*time.Second, TCPWriteTimeout)
	s.SetTCPTimeouts(&corefile.Timeouts{Read: 2 * time.Second, Idle: time.Minute, Write: 3 * time.Second})
	check(2*time.Second, time.Minute, 3*time.Second)
	s.SetTCPTimeouts(&corefile.Timeouts{Idle: time.Minute})
	check(time.Minute, time.Minute, TCPWriteTimeout)
	s.SetTCPTimeouts(nil)
	check(7*time.Second, 7*time.Second, TCPWriteTimeout)
}

func TestDebugHexdump(t *testing.T) {
	got := hexdump([]byte{0x00, 0x0a, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 1, 7, 'e', 'x', 'a', 'm'})
	want := "debug: 000000 00 0a 01 00 00 01 00 00 00 00 00 01 07 65 78 61\ndebug: 000010 6d\ndebug: 000011"
	if got != want {
		t.Errorf("hexdump\n%s\nwant\n%s", got, want)
	}
}

// FuzzLogFormat checks that no log format makes the log plugin's parser
// or its rendering panic, and that literal text survives.
func FuzzLogFormat(f *testing.F) {
	for _, s := range []string{corefile.CommonLogFormat, corefile.CombinedLogFormat, "{name} {/meta} {x}", "A } {type}", "{ {name} }", "{", "}", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, format string) {
		nodes := parseLogFormat(format)
		var b strings.Builder
		for _, n := range nodes {
			b.WriteString(n.text)
		}
		if b.String() != format {
			t.Fatalf("format %q split into %+v", format, nodes)
		}
		e := logEntry{client: netip.MustParseAddrPort("[::1]:53"), req: q("a.example.", dns.TypeA), name: "a.example."}
		for _, n := range nodes {
			if n.placeholder {
				_ = e.value(n.text)
			}
		}
	})
}
