package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/agent/instance"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

const corefileTmpl = `cluster.local:%[1]d {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    reload 2s
    loop
    bind 127.0.0.1
    forward . %[2]s {
        force_tcp
    }
    prometheus 127.0.0.1:%[3]d
    health 127.0.0.1:%[4]d
}
.:%[1]d {
    errors
    cache 30
    reload 2s
    bind 127.0.0.1
    forward . %[5]s
    prometheus 127.0.0.1:%[3]d
}
`

type agentFixture struct {
	// noReload leaves the reload plugin out of the Corefile.
	noReload                    bool
	dir                         string
	dnsPort, promPort, hlthPort int
	done                        chan error
	cancel                      context.CancelFunc
	addr                        string
}

func startAgent(t *testing.T, cluster, other string, extra ...string) *agentFixture {
	t.Helper()
	return startAgentWith(t, &agentFixture{}, cluster, other, extra...)
}

// startAgentWith is startAgent with some fixture fields preset.
func startAgentWith(t *testing.T, f *agentFixture, cluster, other string, extra ...string) *agentFixture {
	t.Helper()
	f.dir, f.dnsPort, f.promPort, f.hlthPort, f.done = t.TempDir(), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), make(chan error, 1)
	f.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(f.dnsPort))
	f.writeCorefile(t, cluster, other)
	args := append([]string{
		"-localip", "127.0.0.1", "-conf", filepath.Join(f.dir, "Corefile"),
		"-basecorefile", filepath.Join(f.dir, "absent.base"), "-kubednscm", "",
		"-setupinterface=false", "-setupiptables=false", "-dns.port", strconv.Itoa(f.dnsPort),
		"-metrics-listen-address", "", "-rundir", filepath.Join(f.dir, "run"), "-lameduck", "200ms",
		"-pidfile", filepath.Join(f.dir, "agent.pid"),
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- Run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			t.Logf("agent stopped: %v", err)
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-f.done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		// The pid file is written once health and metrics listen too (DNS
		// answers a little earlier).
		if _, err := f.query("kube-dns.kube-system.svc.cluster.local.", "udp"); err == nil {
			if _, err := os.Stat(filepath.Join(f.dir, "agent.pid")); err == nil {
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("agent did not answer within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *agentFixture) writeCorefile(t *testing.T, cluster, other string) {
	t.Helper()
	text := fmt.Sprintf(corefileTmpl, f.dnsPort, cluster, f.promPort, f.hlthPort, other)
	if f.noReload {
		text = strings.ReplaceAll(text, "    reload 2s\n", "")
	}
	tmp := filepath.Join(f.dir, "Corefile.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, "Corefile")); err != nil {
		t.Fatal(err)
	}
}

func (f *agentFixture) query(name, netw string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Net: netw, Timeout: time.Second}
	r, _, err := c.Exchange(m, f.addr)
	return r, err
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var (
	clusterZone = dnstest.MustZone("kube-dns.kube-system.svc.cluster.local. 30 IN A 10.0.0.10")
	otherZone   = dnstest.MustZone("www.example. 300 IN A 192.0.2.1", "new.example. 300 IN A 192.0.2.2")
)

func TestRunServesHealthMetricsAndStops(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)

	for _, tc := range []struct {
		name, qname, netw, want string
		upstream                *dnstest.Server
		proto                   string
	}{
		{"cluster over force_tcp", "kube-dns.kube-system.svc.cluster.local.", "udp", "10.0.0.10", cluster, "tcp"},
		{"other zone", "www.example.", "udp", "192.0.2.1", other, "udp"},
		{"tcp client", "www.example.", "tcp", "192.0.2.1", other, "udp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := f.query(tc.qname, tc.netw)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tc.want {
				t.Fatalf("answer %v", r)
			}
			if tc.upstream.Count(tc.proto) == 0 {
				t.Errorf("upstream saw no %s query", tc.proto)
			}
		})
	}
	if code, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/health", f.hlthPort)); code != 200 {
		t.Errorf("/health = %d", code)
	}
	code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", f.promPort))
	for _, want := range []string{
		`coredns_dns_requests_total{family="1",proto="udp",server="dns://127.0.0.1:` + strconv.Itoa(f.dnsPort) + `",type="A",view="",zone="cluster.local."}`,
		`coredns_cache_hits_total{server="dns://127.0.0.1:` + strconv.Itoa(f.dnsPort) + `",type="success",view="",zones="."} 1`,
		`coredns_forward_requests_total`,
		`coredns_proxy_request_duration_seconds_count{proxy_name="forward"`,
		`coredns_build_info{goversion="go`,
		`coredns_plugin_enabled{name="cache",server="dns://127.0.0.1:` + strconv.Itoa(f.dnsPort) + `",view="",zone="cluster.local."} 1`,
		`coredns_plugin_enabled{name="loop",server="dns://127.0.0.1:` + strconv.Itoa(f.dnsPort) + `",view="",zone="cluster.local."} 1`,
		`coredns_health_request_duration_seconds_bucket`,
		`coredns_reload_failed_total 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(f.dir, "agent.pid")); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pidfile %q, %v", b, err)
	}

	f.cancel()
	begin := time.Now()
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancellation")
	}
	t.Logf("stopped in %v", time.Since(begin))
	if _, err := f.query("www.example.", "udp"); err == nil {
		t.Error("still answering after Run returned")
	}
	f.done <- nil // for the cleanup
}

func TestRunReloadsWithoutDroppingQueries(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)
	replacement := dnstest.NewServer(t, otherZone.Handler())
	f.writeCorefile(t, cluster.Addr, replacement.Addr)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; replacement.Count("") == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the new Corefile was not applied within 15s")
		}
		r, err := f.query(fmt.Sprintf("n%d.new.example.", i), "udp")
		if err != nil {
			t.Fatalf("query %d during reload: %v", i, err)
		}
		_ = r
		time.Sleep(20 * time.Millisecond)
	}
	// A bad Corefile keeps the old configuration.
	if err := os.WriteFile(filepath.Join(f.dir, "Corefile"), []byte(". {\n  nosuchplugin\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if r, err := f.query("www.example.", "udp"); err != nil || len(r.Answer) != 1 {
		t.Errorf("after a bad Corefile: %v, %v", r, err)
	}
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", f.promPort))
	for _, want := range []string{"coredns_reload_failed_total 1", `coredns_reload_version_info{hash="sha512",value="`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := strings.Count(body, "coredns_reload_version_info{"); n != 1 {
		t.Errorf("%d coredns_reload_version_info series, want 1 (the configuration tried last)", n)
	}
}

// TestRunReloadWithoutReloadPlugin checks the two ways a Corefile without
// the reload plugin is reloaded: node-cache's -reloadwithsignal (checked
// every -syncinterval) and CoreDNS's SIGUSR1.
func TestRunReloadWithoutReloadPlugin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"reloadwithsignal", []string{"-reloadwithsignal", "-syncinterval", "300ms"}},
		{"SIGUSR1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := dnstest.NewServer(t, clusterZone.Handler())
			other := dnstest.NewServer(t, otherZone.Handler())
			f := startAgentWith(t, &agentFixture{noReload: true}, cluster.Addr, other.Addr, tc.extra...)
			replacement := dnstest.NewServer(t, otherZone.Handler())
			f.writeCorefile(t, cluster.Addr, replacement.Addr)
			if tc.extra == nil {
				if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for i := 0; replacement.Count("") == 0; i++ {
				if time.Now().After(deadline) {
					t.Fatal("the new Corefile was not applied within 10s")
				}
				if _, err := f.query(fmt.Sprintf("n%d.new.example.", i), "udp"); err != nil {
					t.Fatalf("query %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(bad, []byte(".:5300 {\n  errors\n  frobnicate\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-nosuchflag"}, "nosuchflag"},
		{"unknown plugin", []string{"-localip", "127.0.0.1", "-conf", bad, "-basecorefile", filepath.Join(dir, "none"),
			"-setupinterface=false", "-setupiptables=false", "-rundir", filepath.Join(dir, "run")}, "frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Run(ctx, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestRunReloadMovesListeners(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)
	oldAddr := f.addr
	newPort := testenv.FreePort(t)
	text := fmt.Sprintf(corefileTmpl, newPort, cluster.Addr, f.promPort, f.hlthPort, other.Addr)
	if err := os.WriteFile(filepath.Join(f.dir, "Corefile.tmp"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(f.dir, "Corefile.tmp"), filepath.Join(f.dir, "Corefile")); err != nil {
		t.Fatal(err)
	}
	f.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(newPort))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r, err := f.query("www.example.", "udp"); err == nil && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new listen address not served within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The old listeners close once the reload is complete (after its loop
	// probes), a moment after the new ones answer.
	f.addr = oldAddr
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := f.query("www.example.", "udp"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old listen address still answers 5s after the new one does")
		}
	}
}

// writeCorefileText replaces the agent's Corefile with text atomically.
func (f *agentFixture) writeCorefileText(t *testing.T, text string) {
	t.Helper()
	tmp := filepath.Join(f.dir, "Corefile.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, "Corefile")); err != nil {
		t.Fatal(err)
	}
}

// extraState says how addr answers a name of the extra.test block: "served"
// (forwarded: that block is in force there), "refused" (a listener without
// that block) or "silent" (no listener).
func extraState(addr string) string {
	m := new(dns.Msg)
	m.SetQuestion("probe.extra.test.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	switch r, _, err := c.Exchange(m, addr); {
	case err != nil:
		return "silent"
	case r.Rcode == dns.RcodeRefused:
		return "refused"
	default:
		return "served"
	}
}

// socketAddr returns the local address of a handed-over socket: an error
// for a closed or foreign descriptor.
func socketAddr(key string, f *os.File) (string, error) {
	if strings.HasPrefix(key, "udp/") {
		c, err := net.FilePacketConn(f)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.FileListener(f)
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// TestRunHandoverAfterReload: a new instance asking for the sockets after
// a reload that opened, then closed, a listen address receives the sockets
// open at that moment: the new address's, then no longer it, and every
// descriptor it gets is a live socket bound where its key says.
func TestRunHandoverAfterReload(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)
	base := fmt.Sprintf(corefileTmpl, f.dnsPort, cluster.Addr, f.promPort, f.hlthPort, other.Addr)
	newAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
	_, newPort, _ := net.SplitHostPort(newAddr)
	extra := fmt.Sprintf("extra.test:%s {\n    reload 2s\n    bind 127.0.0.1\n    forward . %s\n}\n", newPort, other.Addr)
	for _, tc := range []struct {
		name         string
		text         string
		newState     string
		want, closed []string
	}{
		{"listen address added", base + extra, "served",
			[]string{"udp/" + f.addr, "tcp/" + f.addr, "udp/" + newAddr, "tcp/" + newAddr}, nil},
		{"listen address removed", base, "silent",
			[]string{"udp/" + f.addr, "tcp/" + f.addr}, []string{"udp/" + newAddr, "tcp/" + newAddr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.writeCorefileText(t, tc.text)
			for deadline := time.Now().Add(15 * time.Second); extraState(newAddr) != tc.newState; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("reload not applied within 15s (%s: %s, want %s)", newAddr, extraState(newAddr), tc.newState)
				}
			}
			reg, err := instance.Register(filepath.Join(f.dir, "run"))
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			socks, from, err := reg.FetchSockets(ctx)
			if err != nil || from == "" {
				t.Fatalf("FetchSockets: from %q, %v", from, err)
			}
			defer func() {
				for _, s := range socks {
					s.Close()
				}
			}()
			for _, k := range tc.want {
				if socks[k] == nil {
					t.Errorf("hand-over lacks %s (got %d sockets)", k, len(socks))
				}
			}
			for k, s := range socks {
				base, _, _ := strings.Cut(k, "#")
				if slices.Contains(tc.closed, base) {
					t.Errorf("hand-over still carries %s, closed by the reload", k)
					continue
				}
				got, err := socketAddr(k, s)
				if err != nil || "udp/"+got != base && "tcp/"+got != base {
					t.Errorf("socket %s: bound to %q, %v", k, got, err)
				}
			}
		})
	}
}

// handedOver asks the agent of f for its sockets as a new instance would,
// closes them, and returns their keys.
func handedOver(t *testing.T, f *agentFixture) []string {
	t.Helper()
	reg, err := instance.Register(filepath.Join(f.dir, "run"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	socks, from, err := reg.FetchSockets(ctx)
	if err != nil || from == "" {
		t.Fatalf("FetchSockets: from %q, %v", from, err)
	}
	var keys []string
	for k, s := range socks {
		keys = append(keys, k)
		s.Close()
	}
	slices.Sort(keys)
	return keys
}

// TestRunReloadWithLoopRefused: a reloaded Corefile whose cluster block
// forwards to the agent itself is probed like a start, found looping, and
// refused: the agent keeps running with the old configuration (old
// upstream, the new configuration's extra listen address closed again),
// counts the loop, and a later good Corefile still applies.
func TestRunReloadWithLoopRefused(t *testing.T) {
	cluster := dnstest.NewServer(t, clusterZone.Handler())
	other := dnstest.NewServer(t, otherZone.Handler())
	f := startAgent(t, cluster.Addr, other.Addr)
	newAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
	_, newPort, _ := net.SplitHostPort(newAddr)
	extra := fmt.Sprintf("extra.test:%s {\n    reload 2s\n    bind 127.0.0.1\n    forward . %s\n}\n", newPort, other.Addr)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", f.promPort)
	const counted = `nodelocaldns_loop_detected_total{zone="cluster.local."} 1`

	f.writeCorefileText(t, fmt.Sprintf(corefileTmpl, f.dnsPort, f.addr, f.promPort, f.hlthPort, other.Addr)+extra)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, body := get(t, metricsURL); strings.Contains(body, counted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 15s of the looping Corefile", counted)
		}
	}
	select {
	case err := <-f.done:
		t.Fatalf("the agent stopped on a looping reload: %v", err)
	default:
	}
	cluster.Reset()
	for _, tc := range []struct {
		name, qname string
		wantRcode   int
	}{
		{"cached", "kube-dns.kube-system.svc.cluster.local.", dns.RcodeSuccess},
		{"miss goes to the old upstream", "nosuch.kube-system.svc.cluster.local.", dns.RcodeNameError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := f.query(tc.qname, "udp")
			if err != nil || r.Rcode != tc.wantRcode {
				t.Fatalf("after the refused reload: %v, %v; want %s", r, err, dns.RcodeToString[tc.wantRcode])
			}
		})
	}
	if cluster.Count("tcp") != 1 {
		t.Errorf("old cluster upstream saw %d TCP queries, want 1 (the miss)", cluster.Count("tcp"))
	}
	if st := extraState(newAddr); st == "served" {
		t.Errorf("%s serves the refused configuration's block", newAddr)
	}
	// The listen address opened for the refused configuration is closed
	// again: a new instance is not handed its socket.
	if keys := handedOver(t, f); slices.Contains(keys, "udp/"+newAddr) || slices.Contains(keys, "tcp/"+newAddr) ||
		!slices.Contains(keys, "udp/"+f.addr) {
		t.Errorf("sockets after the refused reload: %v; want %s without %s", keys, f.addr, newAddr)
	}

	replacement := dnstest.NewServer(t, otherZone.Handler())
	f.writeCorefileText(t, fmt.Sprintf(corefileTmpl, f.dnsPort, cluster.Addr, f.promPort, f.hlthPort, replacement.Addr))
	for deadline := time.Now().Add(15 * time.Second); replacement.Count("") == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a good Corefile after the refused one was not applied within 15s")
		}
		_, _ = f.query(fmt.Sprintf("n%d.new.example.", time.Now().UnixNano()), "udp")
	}
	if _, body := get(t, metricsURL); !strings.Contains(body, counted) {
		t.Errorf("loop counter changed after a good reload; want %s", counted)
	}
}
