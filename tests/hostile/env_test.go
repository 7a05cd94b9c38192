package hostile

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/tests/agent"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// Addresses inside the test's own network namespace.
const (
	localIP   = "127.0.10.10" // the agent (-localip)
	clusterIP = "127.0.10.1"  // the cluster DNS (healthy, over TCP)
	holeIP    = "127.0.10.2"  // the upstream of "." (never answers)
	bigIP     = "127.0.10.3"  // the stub domain big.test (56 kB answers)
	victimIP  = "127.0.20.2"  // the well-behaved client
)

// attacker returns the source address of attacker n.
func attacker(n int) string { return fmt.Sprintf("127.0.30.%d", n) }

// Limits the issue sets for every attack.
const (
	memoryLimit   = "64Mi"
	maxPeakRSS    = 64 << 20
	settledRSS    = 40 << 20
	settleWithin  = 30 * time.Second
	minHits       = 0.99
	minMisses     = 0.90
	minHealth     = 0.90
	bigAnswerSize = 56 << 10
)

// agentBin is built once by TestMain; inNetns is set when TestMain runs
// in the namespace it made.
var (
	agentBin string
	inNetns  bool
)

// TestMain re-runs the test binary as root in a new network namespace
// (unshare --net), where only the test's own loopback addresses exist: the
// floods never leave it. Without root the tests skip (fail under CI).
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv("HOSTILE_NETNS") == "" {
		if _, err := exec.LookPath("unshare"); err == nil {
			cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
			cmd.Env = append(os.Environ(), "HOSTILE_NETNS=1")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				ee := &exec.ExitError{}
				if errors.As(err, &ee) {
					os.Exit(ee.ExitCode())
				}
				fmt.Fprintln(os.Stderr, "unshare:", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv("HOSTILE_NETNS") != "" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip link set lo up: %v\n%s", err, out)
			os.Exit(1)
		}
		inNetns = true
		dir, err := os.MkdirTemp("", "hostile-agent-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if agentBin, err = agent.BuildAgent(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// requireNetns skips (fails under CI) unless the test runs as root in its
// own network namespace.
func requireNetns(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if !inNetns {
		testenv.Unavailable(t, "could not enter a network namespace of its own (unshare --net)")
	}
}

// env is the agent and its upstreams.
type env struct {
	agent   *agent.Agent
	cluster *dnstest.Server
	hole    *dnstest.Server
	big     *dnstest.Server
}

// template is the official Corefile with prometheus on the local IP.
func template(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(testenv.RepoRoot() + "/tests/agent/testdata/Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "prometheus :9253", "prometheus __PILLAR__LOCAL__DNS__:9253")
}

// clusterHandler answers the cluster zone: web.default.svc (cached by
// the victim), rd.default.svc (an answer that depends on the RD bit) and
// NXDOMAIN with a SOA for everything else.
func clusterHandler() dnstest.Handler {
	zone := dnstest.MustZone(
		"cluster.local. 60 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 60",
		"web.default.svc.cluster.local. 300 IN A 10.96.0.5",
	)
	return dnstest.Func(func(q *dnstest.Query) *dns.Msg {
		if strings.EqualFold(q.Msg.Question[0].Name, "rd.default.svc.cluster.local.") {
			m := new(dns.Msg)
			m.SetReply(q.Msg)
			ip := "10.0.0.2" // RD=0: what a non-recursive answer would be
			if q.Msg.RecursionDesired {
				ip = "10.0.0.1"
			}
			rr, _ := dns.NewRR("rd.default.svc.cluster.local. 300 IN A " + ip)
			m.Answer = []dns.RR{rr}
			return m
		}
		return zone.Reply(q.Msg)
	})
}

// bigHandler answers every TXT query with about 56 kB of records over TCP
// (UDP gets TC), like a name that an attacker controls.
func bigHandler() dnstest.Handler {
	txt := strings.Repeat("x", 250)
	return dnstest.Truncate(dnstest.Func(func(q *dnstest.Query) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q.Msg)
		name := q.Msg.Question[0].Name
		for range bigAnswerSize / 256 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: []string{txt}})
		}
		m.Compress = true
		return m
	}))
}

// setup starts the upstreams and the agent with a 64Mi memory limit.
func setup(t *testing.T) *env {
	t.Helper()
	requireNetns(t)
	e := &env{}
	var err error
	for _, s := range []struct {
		p    **dnstest.Server
		addr string
		h    dnstest.Handler
	}{
		{&e.cluster, clusterIP + ":53", clusterHandler()},
		{&e.hole, holeIP + ":53", dnstest.Drop},
		{&e.big, bigIP + ":53", bigHandler()},
	} {
		if *s.p, err = dnstest.Start(s.addr, s.h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*s.p).Close)
	}
	args := []string{"-memory-limit", memoryLimit}
	if os.Getenv("HOSTILE_NO_MEMORY_LIMIT") != "" {
		// For an agent from before -memory-limit (AGENT_BIN), to show
		// that these tests fail on it.
		args = nil
	}
	e.agent = agent.StartAgent(t, agent.AgentOptions{
		Bin: agentBin, LocalIP: localIP, ClusterDNS: clusterIP,
		Upstreams:   []string{holeIP + ":53"},
		StubDomains: map[string][]string{"big.test": {bigIP + ":53"}},
		Template:    template(t),
		Args:        args,
	})
	// The victim's cached name.
	if r := udpQuery(victimIP, "web.default.svc.cluster.local.", dns.TypeA, 2*time.Second); r == nil || len(r.Answer) != 1 {
		t.Fatalf("priming the cache: %v", r)
	}
	return e
}

// udpQuery sends one query from src and waits up to d for the answer
// (nil when none came).
func udpQuery(src, name string, qtype uint16, d time.Duration) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	buf, err := m.Pack()
	if err != nil {
		return nil
	}
	r, _, err := exchangeUDP(src, buf, d)
	if err != nil {
		return nil
	}
	return r
}

// exchangeUDP sends the packed query q from src to the agent and waits up
// to d for the reply with q's ID; it returns the reply and its wire size.
func exchangeUDP(src string, q []byte, d time.Duration) (*dns.Msg, int, error) {
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(localIP), Port: 53})
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	if _, err := c.Write(q); err != nil {
		return nil, 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	in := make([]byte, 65535)
	for {
		n, err := c.Read(in)
		if err != nil {
			return nil, 0, err
		}
		if n >= 2 && binary.BigEndian.Uint16(in) == binary.BigEndian.Uint16(q) {
			r := new(dns.Msg)
			if err := r.Unpack(in[:n]); err != nil {
				return nil, n, fmt.Errorf("unpack reply: %w", err)
			}
			return r, n, nil
		}
	}
}

// dialTCP opens a TCP connection from src to the agent.
func dialTCP(src string) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", net.JoinHostPort(localIP, "53"))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// writeTCP writes m with its length prefix.
func writeTCP(c net.Conn, m *dns.Msg) error {
	buf, err := m.Pack()
	if err != nil {
		return err
	}
	out := make([]byte, 2+len(buf))
	binary.BigEndian.PutUint16(out, uint16(len(buf)))
	copy(out[2:], buf)
	_, err = c.Write(out)
	return err
}

// readTCP reads one length-prefixed message.
func readTCP(c net.Conn) (*dns.Msg, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(buf)
}

// rss returns the resident set size of pid, and its peak (VmHWM).
func rss(pid int) (cur, peak int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

// resetPeak restarts VmHWM from the current RSS.
func resetPeak(pid int) {
	_ = os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// victim is the well-behaved client measured during an attack: cache hits
// and misses (unique names of the healthy cluster zone) over UDP, and
// /health probes, each counted as answered or not.
type victim struct {
	hits, hitsOK     atomic.Int64
	misses, missesOK atomic.Int64
	probes, probesOK atomic.Int64
	wg               sync.WaitGroup
	stop             chan struct{}
}

// startVictim starts the victim's loops until stop.
func startVictim(e *env) *victim {
	v := &victim{stop: make(chan struct{})}
	loop := func(every time.Duration, fn func(i int)) {
		v.wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for i := 0; ; i++ {
				select {
				case <-v.stop:
					return
				case <-t.C:
				}
				fn(i)
			}
		})
	}
	// Cache hits: one at a time, a second each to answer.
	loop(20*time.Millisecond, func(int) {
		v.hits.Add(1)
		if r := udpQuery(victimIP, "web.default.svc.cluster.local.", dns.TypeA, time.Second); r != nil && len(r.Answer) == 1 {
			v.hitsOK.Add(1)
		}
	})
	// Misses to the healthy upstream: two seconds each.
	var seq atomic.Int64
	for range 2 {
		loop(100*time.Millisecond, func(int) {
			v.misses.Add(1)
			name := fmt.Sprintf("victim-%d-%d.default.svc.cluster.local.", time.Now().UnixNano(), seq.Add(1))
			if r := udpQuery(victimIP, name, dns.TypeA, 2*time.Second); r != nil && r.Rcode == dns.RcodeNameError {
				v.missesOK.Add(1)
			}
		})
	}
	// Liveness probes as the kubelet sends them.
	hc := &http.Client{Timeout: 2 * time.Second}
	loop(200*time.Millisecond, func(int) {
		v.probes.Add(1)
		resp, err := hc.Get("http://" + e.agent.Health + "/health")
		if err == nil {
			if resp.StatusCode == http.StatusOK {
				v.probesOK.Add(1)
			}
			resp.Body.Close()
		}
	})
	return v
}

// end stops the victim and checks its figures.
func (v *victim) end(t *testing.T) {
	t.Helper()
	close(v.stop)
	v.wg.Wait()
	check := func(what string, ok, n int64, minFrac float64) {
		if n == 0 {
			t.Errorf("victim: no %s measured", what)
			return
		}
		frac := float64(ok) / float64(n)
		t.Logf("victim: %s answered %d/%d (%.1f%%)", what, ok, n, 100*frac)
		if frac < minFrac {
			t.Errorf("victim: %s answered %.1f%%, want >= %.0f%%", what, 100*frac, 100*minFrac)
		}
	}
	check("cache hits", v.hitsOK.Load(), v.hits.Load(), minHits)
	check("misses", v.missesOK.Load(), v.misses.Load(), minMisses)
	check("/health probes", v.probesOK.Load(), v.probes.Load(), minHealth)
}

// rssWatch samples the agent's RSS until stopped and keeps the peak.
type rssWatch struct {
	pid  int
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS(pid int) *rssWatch {
	resetPeak(pid)
	w := &rssWatch{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			cur, hwm := rss(pid)
			w.peak.Store(max(w.peak.Load(), cur, hwm))
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops sampling and returns the peak RSS.
func (w *rssWatch) end() int64 {
	close(w.stop)
	<-w.done
	_, hwm := rss(w.pid)
	return max(w.peak.Load(), hwm)
}

// attack runs fn (which must return by its context's deadline, d) while
// the victim and the RSS are measured, then checks the limits:
// peak RSS, the victim's answers, and the RSS back under 40 MB within 30 s.
func attack(t *testing.T, e *env, d time.Duration, fn func(ctx context.Context)) {
	t.Helper()
	pid := e.agent.PID()
	before, _ := rss(pid)
	w := watchRSS(pid)
	v := startVictim(e)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	fn(ctx)
	cancel()
	v.end(t)
	peak := w.end()
	t.Logf("agent RSS: %.1f MB before, peak %.1f MB during the attack", mb(before), mb(peak))
	if peak > maxPeakRSS {
		t.Errorf("peak RSS %.1f MB, want <= %.0f MB", mb(peak), mb(maxPeakRSS))
	}
	start := time.Now()
	for {
		cur, _ := rss(pid)
		if cur <= settledRSS {
			t.Logf("agent RSS %.1f MB %.1f s after the attack", mb(cur), time.Since(start).Seconds())
			break
		}
		if time.Since(start) > settleWithin {
			t.Errorf("agent RSS still %.1f MB %s after the attack, want <= %.0f MB", mb(cur), settleWithin, mb(settledRSS))
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if exited, err := e.agent.Exited(); exited {
		t.Fatalf("the agent exited: %v", err)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// refused returns the agent's count of refusals for reason.
func refused(t *testing.T, e *env, reason string) float64 {
	t.Helper()
	return agent.MetricSum(e.agent.MetricsText(t), "nodelocaldns_server_refused_total", `reason="`+reason+`"`)
}
