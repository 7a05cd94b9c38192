// Package compat is the differential suite: CoreDNS v1.13.2 (built from the
// Go module proxy by `make coredns`, the DNS server inside node-cache) and
// the agent run the same Corefile side by side against the same NSD
// upstreams, get the same queries, and their answers and metrics are
// compared. Every difference the suite accepts is listed, with its reason,
// in docs/agent-config.md under "Differences from CoreDNS".
package compat

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// CoreDNS is a running CoreDNS process.
type CoreDNS struct {
	// DNS and Metrics are its addresses (IP:53, IP:9253).
	DNS, Metrics string
	dir          string
	cmd          *exec.Cmd
	done         chan struct{}
}

// StartCoreDNS runs bin with the Corefile text, whose server blocks bind
// ip, and waits until it answers on ip:53. It is stopped when the test
// ends.
func StartCoreDNS(t testing.TB, bin, corefile, ip string) *CoreDNS {
	t.Helper()
	dir := t.TempDir()
	c := &CoreDNS{
		DNS:     net.JoinHostPort(ip, "53"),
		Metrics: net.JoinHostPort(ip, "9253"),
		dir:     dir,
		done:    make(chan struct{}),
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "coredns.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	c.cmd = exec.Command(bin, "-conf", conf, "-pidfile", filepath.Join(dir, "coredns.pid"))
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = out, out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start coredns: %v", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("coredns output:\n%s", c.Log())
		}
	})
	if err := waitDNS(c.DNS, c.done, 30*time.Second); err != nil {
		t.Fatalf("coredns on %s: %v\n%s", c.DNS, err, c.Log())
	}
	return c
}

// waitDNS waits until addr answers a query over TCP (any rcode), or done
// is closed (the process exited).
func waitDNS(addr string, done <-chan struct{}, d time.Duration) error {
	cl := &dns.Client{Net: "tcp", Timeout: 300 * time.Millisecond}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("process exited")
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion("ready.invalid.", dns.TypeA)
		if _, _, err := cl.Exchange(m, addr); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not answering after %v", d)
}

// Stop terminates CoreDNS (SIGTERM, then SIGKILL after 5s).
func (c *CoreDNS) Stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Log returns CoreDNS's output.
func (c *CoreDNS) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "coredns.out"))
	return string(b)
}

// CoreDNSBinary returns the CoreDNS binary: $COREDNS_BIN, else bin/coredns
// (`make coredns`). Missing, the test skips (fails under CI).
func CoreDNSBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("COREDNS_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(testenv.RepoRoot(), "bin", "coredns")
	if _, err := os.Stat(p); err != nil {
		testenv.Unavailable(t, "CoreDNS not built: run `make coredns` (or set COREDNS_BIN)")
	}
	return p
}
