package app

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/agent/netif"
	"github.com/nodelocaldns/nodelocaldns/agent/sysctl"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// inNetnsEnv marks the re-executed test process that runs inside the
// network namespace created by the parent.
const inNetnsEnv = "NODELOCALDNS_NODE_TEST_NETNS"

// runInNetns re-executes the current test inside a new network namespace, so
// that every thread of the process (the sync loop too) works on that
// namespace and never on the host's. It returns true in the child, where the
// test body runs.
func runInNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) != "" {
		return true
	}
	testenv.RequireRoot(t)
	ipBin := testenv.Binary(t, "ip", "")
	testenv.Binary(t, "iptables", "")
	ns := "nldapp-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(ns) > 30 {
		ns = ns[:30]
	}
	ns += fmt.Sprintf("-%d", os.Getpid())
	if out, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer func() { _ = exec.Command(ipBin, "netns", "del", ns).Run() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ipBin, "netns", "exec", ns, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in netns %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("test in netns failed: %v", err)
	}
	return false
}

func nodeOpts(t *testing.T, rundir, localIPs string) *Options {
	t.Helper()
	o, err := ParseFlags([]string{"-localip", localIPs, "-rundir", rundir, "-syncinterval", "200ms", "-iptables-backend", "nft"})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func ruleCount(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("iptables-save").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	return strings.Count(string(out), "nodelocaldns:")
}

// TestNodeTwinsWithDifferentConfigs: an interception instance and an
// injection instance (an upgrade that changes -localip) run together. While
// both live, neither deletes the other's rules or addresses (no flapping);
// when the old one leaves, it removes nothing, and the survivor's next sync
// prunes what only the old one used; the last one out removes everything.
func TestNodeTwinsWithDifferentConfigs(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	dir := t.TempDir()
	ctx := context.Background()
	old, err := setupNode(ctx, nodeOpts(t, dir, "169.254.20.10,10.96.0.10"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if n := ruleCount(t); n != 24 {
		t.Fatalf("%d rules after the first instance, want 24", n)
	}
	newer, err := setupNode(ctx, nodeOpts(t, dir, "169.254.20.10"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	for i := range 10 {
		time.Sleep(100 * time.Millisecond)
		if n := ruleCount(t); n != 24 {
			t.Fatalf("twins with different configs: %d rules after %d00 ms, want a stable 24", n, i+1)
		}
	}
	if err := old.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for ruleCount(t) != 12 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rules 3 s after the old instance left, want its extra 12 pruned", ruleCount(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	addrs, err := netif.Addresses(DefaultInterfaceName)
	if err != nil || len(addrs) != 1 || addrs[0].String() != "169.254.20.10" {
		t.Fatalf("addresses after pruning: %v, %v; want only 169.254.20.10", addrs, err)
	}
	if err := newer.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := ruleCount(t); n != 0 {
		t.Errorf("%d rules after the last instance left, want 0", n)
	}
	if addrs, _ := netif.Addresses(DefaultInterfaceName); len(addrs) != 0 {
		t.Errorf("interface still has %v", addrs)
	}
}

// TestNodeFailedStartUndoes: a start that fails before serving (Close
// without Serving) removes what the set-up installed, and -skipteardown
// keeps it.
func TestNodeFailedStartUndoes(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	for _, tc := range []struct {
		name      string
		extra     []string
		wantRules int
	}{
		{name: "teardown", wantRules: 0},
		{name: "skipteardown", extra: []string{"-skipteardown"}, wantRules: 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags(append([]string{"-localip", "169.254.20.10", "-rundir", t.TempDir(), "-iptables-backend", "nft"}, tc.extra...))
			if err != nil {
				t.Fatal(err)
			}
			n, err := setupNode(context.Background(), o, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if got := ruleCount(t); got != 12 {
				t.Fatalf("%d rules after setup, want 12 (installed before serving)", got)
			}
			n.Close()
			if got := ruleCount(t); got != tc.wantRules {
				t.Errorf("%d rules after Close, want %d", got, tc.wantRules)
			}
			_ = netif.Remove(DefaultInterfaceName)
			if tc.wantRules > 0 {
				_ = exec.Command("iptables", "-t", "raw", "-F").Run()
				_ = exec.Command("iptables", "-F").Run()
			}
		})
	}
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

const (
	procV4 = "/proc/sys/net/ipv4/icmp_ratelimit"
	procV6 = "/proc/sys/net/ipv6/icmp/ratelimit"
)

// TestSysctlsOnly: `agent -sysctls-only -icmp-ratelimit=0` (the init
// container) sets both ICMP rate limits of its network namespace, a fresh
// one here (kernel default 1000 ms), and returns without serving; the host's
// values are untouched.
func TestSysctlsOnly(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		hostV4 := ""
		if b, err := os.ReadFile(procV4); err == nil {
			hostV4 = strings.TrimSpace(string(b))
		}
		if !runInNetns(t) {
			if b, err := os.ReadFile(procV4); err == nil && strings.TrimSpace(string(b)) != hostV4 {
				t.Errorf("host icmp_ratelimit changed from %s to %s", hostV4, strings.TrimSpace(string(b)))
			}
			return
		}
	}
	for _, p := range []string{procV4, procV6} {
		if err := os.WriteFile(p, []byte("1000"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Main(ctx, []string{"-sysctls-only", "-icmp-ratelimit=0"}); err != nil {
		t.Fatalf("Main(-sysctls-only): %v", err)
	}
	for _, p := range []string{procV4, procV6} {
		if got := readSysctl(t, p); got != "0" {
			t.Errorf("%s = %s after -sysctls-only, want 0", p, got)
		}
	}
	// Applying again is a no-op and still succeeds.
	if err := Main(ctx, []string{"-sysctls-only", "-icmp-ratelimit=0"}); err != nil {
		t.Errorf("second Main(-sysctls-only): %v", err)
	}
}

// TestNodeSysctls: -icmp-ratelimit=0 holds before the agent serves
// (setupNode) and a value changed by someone is set back by the next sync.
func TestNodeSysctls(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	for _, p := range []string{procV4, procV6} {
		if err := os.WriteFile(p, []byte("1000"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o, err := ParseFlags([]string{"-localip", "169.254.20.10", "-rundir", t.TempDir(), "-syncinterval", "200ms",
		"-iptables-backend", "nft", "-icmp-ratelimit=0"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n, err := setupNode(context.Background(), o, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, p := range []string{procV4, procV6} {
		if got := readSysctl(t, p); got != "0" {
			t.Fatalf("%s = %s after setup, want 0 (before serving)", p, got)
		}
	}
	if err := os.WriteFile(procV4, []byte("1000"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for readSysctl(t, procV4) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s 3 s after a change by hand, want 0 again within a sync", procV4, readSysctl(t, procV4))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := testutil.ToFloat64(n.errs.WithLabelValues("sysctl")); got != 0 {
		t.Errorf("sysctl errors = %v, want 0", got)
	}

	// A value the kernel rounds to jiffies (7 ms reads back as 8 with
	// HZ=250) is written once, not again at every sync.
	e, err := sysctl.NewICMPRateLimit(sysctl.DefaultRoot, 7)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.Ensure(); err != nil || len(res.Changed) != 2 {
		t.Fatalf("set to 7 ms: changed %v, %v; want both written", res.Changed, err)
	}
	for i := range 3 {
		if res, err := e.Ensure(); err != nil || len(res.Changed) != 0 {
			t.Fatalf("sync %d after setting 7 ms (now %s): changed %v, %v; want nothing", i, readSysctl(t, procV4), res.Changed, err)
		}
	}
}

// TestNodeSysctlFailureNotFatal: a /proc/sys the agent cannot write (here a
// tree without the files) does not stop the start; each attempt is counted
// in coredns_nodecache_setup_errors_total{errortype="sysctl"}, which exists
// at 0 from the start when nothing fails.
func TestNodeSysctlFailureNotFatal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limit      string
		wantErrors bool
	}{
		{name: "unwritable, -icmp-ratelimit=0", limit: "0", wantErrors: true},
		{name: "default -1 touches nothing", limit: "-1", wantErrors: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := sysctlRoot
			sysctlRoot = filepath.Join(t.TempDir(), "missing")
			defer func() { sysctlRoot = old }()
			o, err := ParseFlags([]string{"-localip", "169.254.20.10", "-rundir", t.TempDir(), "-syncinterval", "100ms",
				"-setupinterface=false", "-setupiptables=false", "-icmp-ratelimit=" + tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			n, err := setupNode(context.Background(), o, reg)
			if err != nil {
				t.Fatalf("setupNode with an unwritable /proc/sys: %v, want no error", err)
			}
			// Syncs run every 100 ms: with errors, wait (bounded) for one
			// after the start's instead of a fixed pause a loaded machine
			// may not schedule it in; without, give a few syncs the time.
			if tc.wantErrors {
				for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(n.errs.WithLabelValues("sysctl")) < 2 && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				time.Sleep(350 * time.Millisecond)
			}
			n.Close()
			got := testutil.ToFloat64(n.errs.WithLabelValues("sysctl"))
			if tc.wantErrors && got < 2 {
				t.Errorf("sysctl errors = %v, want at least 2 (start and syncs)", got)
			}
			if !tc.wantErrors && got != 0 {
				t.Errorf("sysctl errors = %v, want 0", got)
			}
			if err := ApplySysctls(o, log.New(io.Discard, "", 0)); (err != nil) != tc.wantErrors {
				t.Errorf("ApplySysctls: %v, want error %v", err, tc.wantErrors)
			}
		})
	}
}
