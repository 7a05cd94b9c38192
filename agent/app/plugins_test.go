package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// runCorefile runs the agent on the Corefile text (with %[1]d as the DNS
// port) until the test ends and returns the DNS address once it answers
// `probe` and has written its pid file (after its health, metrics and
// pprof endpoints listen: DNS answers a moment earlier).
func runCorefile(t *testing.T, text, probe string) string {
	t.Helper()
	dir := t.TempDir()
	port := testenv.FreePort(t)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(strings.ReplaceAll(text, "PORT", strconv.Itoa(port))), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"-localip", "127.0.0.1", "-conf", filepath.Join(dir, "Corefile"),
			"-basecorefile", filepath.Join(dir, "absent.base"), "-kubednscm", "",
			"-setupinterface=false", "-setupiptables=false", "-dns.port", strconv.Itoa(port),
			"-metrics-listen-address", "", "-rundir", filepath.Join(dir, "run"), "-lameduck", "0s",
			"-pidfile", filepath.Join(dir, "agent.pid")})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			t.Logf("agent stopped: %v", err)
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := &dns.Client{Timeout: time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion(probe, dns.TypeA)
		if _, _, err := c.Exchange(m, addr); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "agent.pid")); err == nil {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("agent did not answer (with its pid file written) within 10s")
		}
	}
}

// TestRunPluginOptions runs a Corefile with two chained forward plugins
// (next NXDOMAIN), pprof, and prometheus on two addresses (one per block).
func TestRunPluginOptions(t *testing.T) {
	nx := dnstest.NewServer(t, dnstest.Rcode(dns.RcodeNameError))
	ok := dnstest.NewServer(t, otherZone.Handler())
	prom1, prom2, pprofPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	text := fmt.Sprintf(`.:PORT {
    bind 127.0.0.1
    bufsize 1232
    timeouts {
        idle 30s
    }
    debug
    errors {
        consolidate 1m "^never$"
    }
    log example. "{name}"
    forward . %[1]s {
        next NXDOMAIN
    }
    forward . %[2]s
    prometheus 127.0.0.1:%[3]d
    pprof 127.0.0.1:%[5]d {
        block
    }
}
cluster.local:PORT {
    bind 127.0.0.1
    cache {
        keepttl
        disable denial
    }
    forward . %[2]s
    prometheus 127.0.0.1:%[4]d
}
`, nx.Addr, ok.Addr, prom1, prom2, pprofPort)
	addr := runCorefile(t, text, "www.example.")
	m := new(dns.Msg)
	m.SetQuestion("www.example.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("www.example. through next NXDOMAIN: %v %v", r, err)
	}
	if nx.Count("") == 0 {
		t.Error("the first forward was not asked")
	}
	for _, p := range []int{prom1, prom2} {
		if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p)); code != 200 || !strings.Contains(body, "coredns_") {
			t.Errorf("prometheus on port %d: %d", p, code)
		}
	}
	if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", pprofPort)); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %d %.200s", code, body)
	}
	if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/block?debug=1", pprofPort)); code != 200 || !strings.Contains(body, "cycles/second") {
		t.Errorf("pprof block profile: %d %.200s", code, body)
	}
}

// TestRunBindInterface binds by the name of the host's loopback interface,
// excepting its IPv6 address: the agent answers on 127.0.0.1 only.
func TestRunBindInterface(t *testing.T) {
	ok := dnstest.NewServer(t, otherZone.Handler())
	addr := runCorefile(t, fmt.Sprintf(".:PORT {\n    bind lo {\n        except ::1\n    }\n    forward . %s\n}\n", ok.Addr), "www.example.")
	_, port, _ := net.SplitHostPort(addr)
	m := new(dns.Msg)
	m.SetQuestion("www.example.", dns.TypeA)
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(m, net.JoinHostPort("::1", port)); err == nil {
		t.Error("answered on ::1, which bind excepts")
	}
}
