// Package agent holds the integration tests of the agent binary against real
// authoritative servers (Debian's nsd) on loopback, and their harness: NSD
// and agent processes with generated configuration in temporary directories.
package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// NSDOptions configure one NSD instance.
type NSDOptions struct {
	// Addr is the "IP:port" NSD listens on (UDP and TCP).
	Addr string
	// Zones maps a zone name ("cluster.local") to its zone file text.
	Zones map[string]string
	// Prefix is prepended to the command line, e.g. ["ip", "netns", "exec", "ns1"].
	Prefix []string
}

// NSD is a running nsd process.
type NSD struct {
	Addr string
	dir  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNSD writes the configuration and zone files into a temporary
// directory and starts nsd in the foreground; it is stopped when the test
// ends. A missing nsd skips the test (fails it under CI).
func StartNSD(t testing.TB, opts NSDOptions) *NSD {
	t.Helper()
	bin := testenv.Binary(t, "nsd", "NSD_BIN")
	dir := t.TempDir()
	host, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		t.Fatalf("nsd address %q: %v", opts.Addr, err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
  ip-address: %s@%s
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: %q
  pidfile: %q
  database: ""
  xfrdfile: %q
  xfrdir: %q
  zonelistfile: %q
  logfile: %q
  server-count: 1
  verbosity: 1
  hide-version: yes
  refuse-any: no
  tcp-count: 200
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: yes
  control-interface: %q
`, host, port, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "xfrd.state"), dir,
		filepath.Join(dir, "zone.list"), filepath.Join(dir, "nsd.log"), filepath.Join(dir, "control.sock"))
	for name, text := range opts.Zones {
		file := name + ".zone"
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone:\n  name: %q\n  zonefile: %q\n", name, file)
	}
	n := &NSD{Addr: opts.Addr, dir: dir, conf: filepath.Join(dir, "nsd.conf"), done: make(chan struct{})}
	if err := os.WriteFile(n.conf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, opts.Prefix...), bin, "-d", "-c", n.conf)
	n.cmd = exec.Command(args[0], args[1:]...)
	out, err := os.Create(filepath.Join(dir, "nsd.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n.cmd.Stdout, n.cmd.Stderr = out, out
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start nsd: %v", err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(n.Stop)
	if len(opts.Prefix) == 0 {
		if err := n.waitReady(opts.Zones); err != nil {
			t.Fatalf("nsd on %s: %v\n%s", opts.Addr, err, n.Log())
		}
	} else if err := n.waitStats(); err != nil {
		t.Fatalf("nsd on %s: %v\n%s", opts.Addr, err, n.Log())
	}
	return n
}

// waitReady waits until NSD answers the SOA of one of its zones over TCP
// (TCP, so the UDP counters stay untouched).
func (n *NSD) waitReady(zones map[string]string) error {
	var zone string
	for z := range zones {
		zone = z
		break
	}
	c := &dns.Client{Net: "tcp", Timeout: 200 * time.Millisecond}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			return fmt.Errorf("nsd exited")
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
		if r, _, err := c.Exchange(m, n.Addr); err == nil && r.Rcode == dns.RcodeSuccess {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not answering after 20s")
}

// waitStats waits until nsd-control can read NSD's statistics (for NSD in
// another network namespace, where the test cannot query it directly).
func (n *NSD) waitStats() error {
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			return fmt.Errorf("nsd exited")
		default:
		}
		if _, err = n.Stats(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("statistics not readable after 20s: %w", err)
}

// Stats returns NSD's counters (nsd-control stats_noreset), e.g.
// "num.udp", "num.tcp", "num.queries", "num.rcode.NXDOMAIN".
func (n *NSD) Stats() (map[string]int, error) {
	ctl, err := testenv.LookBinary("nsd-control", "")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(ctl, "-c", n.conf, "stats_noreset").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nsd-control stats: %w: %s", err, out)
	}
	stats := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			stats[k] = int(f)
		}
	}
	return stats, nil
}

// MustStats is Stats that fails the test on error.
func (n *NSD) MustStats(t testing.TB) map[string]int {
	t.Helper()
	s, err := n.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Stop terminates NSD and waits for it (at most 5s).
func (n *NSD) Stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// Log returns NSD's output and log file.
func (n *NSD) Log() string {
	out, _ := os.ReadFile(filepath.Join(n.dir, "nsd.out"))
	b, _ := os.ReadFile(filepath.Join(n.dir, "nsd.log"))
	return string(out) + string(b)
}
