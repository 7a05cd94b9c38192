package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// TestDemo runs the demo program: the agent part alone on loopback, and the
// whole demo (the network-namespace node when root). Missing binaries skip
// (fail under CI). Every step that applies must pass, and nothing the run
// created may be left.
func TestDemo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		needs    []string // pairs: binary name, environment variable
		wantPass []string // substrings of step names that must PASS
		rootPass []string // ... and as root
	}{
		{
			name:     "loopback agent",
			cfg:      Config{Kube: false, Node: NodeLoopback},
			needs:    []string{"agent", "AGENT_BIN", "nsd", "NSD_BIN", "dig", ""},
			wantPass: []string{"Loopback: NSD", "Agent on a 127.0.0.1 port", "cache hit", "SIGTERM the agent"},
		},
		{
			name: "full",
			cfg:  Config{Kube: true, Node: NodeAuto},
			needs: []string{"kube-apiserver", "KUBE_APISERVER_BIN", "etcd", "ETCD_BIN", "webhook", "WEBHOOK_BIN",
				"agent", "AGENT_BIN", "nsd", "NSD_BIN", "dig", "", "getent", "", "ip", ""},
			wantPass: []string{"Control plane", "Webhook:", "Pods", "Webhook down", "cache hit"},
			rootPass: []string{"Node: network namespaces", "Agent: bin/agent", "kill -9", "Restart", "Surge upgrade", "SIGTERM the last"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < len(tc.needs); i += 2 {
				testenv.Binary(t, tc.needs[i], tc.needs[i+1])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			var out bytes.Buffer
			rep, err := run(ctx, Config{Kube: tc.cfg.Kube, Node: tc.cfg.Node, Out: &out})
			t.Logf("demo output:\n%s", out.String())
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			want := tc.wantPass
			if os.Geteuid() == 0 {
				want = append(append([]string{}, want...), tc.rootPass...)
			}
			checkPassed(t, rep.Results, want)
			checkCleanedUp(t, rep)
		})
	}
}

// checkPassed requires, for each of want, a step whose name contains it
// and that passed.
func checkPassed(t *testing.T, results []Result, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, r := range results {
			if strings.Contains(r.Step, w) {
				found = true
				if r.Status != Pass {
					t.Errorf("step %q: %s (%v)", r.Step, r.Status, r.Err)
				}
			}
		}
		if !found {
			t.Errorf("no step matching %q in %+v", w, results)
		}
	}
}

// checkCleanedUp fails if the run's directory, network namespaces or their
// /etc/netns files are left.
func checkCleanedUp(t *testing.T, rep *Report) {
	t.Helper()
	if _, err := os.Stat(rep.WorkDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work directory %s left behind (%v)", rep.WorkDir, err)
	}
	for _, ns := range rep.Namespaces {
		for _, p := range []string{filepath.Join("/var/run/netns", ns), filepath.Join("/etc/netns", ns)} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s left behind (%v)", p, err)
			}
		}
	}
}

// TestDemoInterrupted cancels the run right after the agent started (what
// Ctrl-C does) and checks that the remaining steps are skipped and that every
// process, namespace and file of the run is gone.
func TestDemoInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		node      string
		root      bool
		cancelAt  string // cancel after the step whose name contains this
		wantSkip  string // a later step, skipped
		needsBins []string
	}{
		{name: "loopback", node: NodeLoopback, cancelAt: "Agent on", wantSkip: "Resolve through the agent",
			needsBins: []string{"agent", "AGENT_BIN", "nsd", "NSD_BIN"}},
		{name: "netns", node: NodeNetns, root: true, cancelAt: "Agent: bin/agent", wantSkip: "Resolve from the pod",
			needsBins: []string{"agent", "AGENT_BIN", "nsd", "NSD_BIN", "dig", "", "getent", "", "ip", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testenv.RequireRoot(t)
			}
			for i := 0; i < len(tc.needsBins); i += 2 {
				testenv.Binary(t, tc.needsBins[i], tc.needsBins[i+1])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out bytes.Buffer
			rep, err := run(ctx, Config{Node: tc.node, Out: &out, AfterStep: func(r Result) {
				if strings.Contains(r.Step, tc.cancelAt) {
					if r.Status != Pass {
						t.Errorf("step %q: %s (%v)", r.Step, r.Status, r.Err)
					}
					cancel()
				}
			}})
			t.Logf("demo output:\n%s", out.String())
			if err == nil || !strings.Contains(err.Error(), "interrupted") {
				t.Fatalf("run error = %v, want interrupted", err)
			}
			skipped := false
			for _, r := range rep.Results {
				if strings.Contains(r.Step, tc.wantSkip) {
					skipped = r.Status == Skip
				}
			}
			if !skipped {
				t.Errorf("step %q not skipped after the interruption: %+v", tc.wantSkip, rep.Results)
			}
			if len(rep.PIDs) < 2 {
				t.Errorf("only %d processes recorded, want NSD and the agent", len(rep.PIDs))
			}
			for _, pid := range rep.PIDs {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process %d still exists after the run (kill -0: %v)", pid, err)
				}
			}
			checkCleanedUp(t, rep)
		})
	}
}

func TestRunRejectsBadMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		node string
	}{
		{"unknown mode", "vm"},
		{"typo", "netn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := run(context.Background(), Config{Node: tc.node, Out: &bytes.Buffer{}}); err == nil {
				t.Fatalf("run with node mode %q: no error", tc.node)
			}
		})
	}
}

func TestMetricSum(t *testing.T) {
	text := `# HELP coredns_cache_hits_total x
coredns_cache_hits_total{server="dns://:53",type="success",zones="."} 2
coredns_cache_hits_total{server="dns://:53",type="denial",zones="."} 3
coredns_cache_hits_totalx 100
coredns_cache_misses_total{server="dns://:53"} 7
`
	for _, tc := range []struct {
		name, metric string
		want         float64
	}{
		{"sums every series", "coredns_cache_hits_total", 5},
		{"other metric", "coredns_cache_misses_total", 7},
		{"absent", "coredns_dns_requests_total", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metricSum(text, tc.metric); got != tc.want {
				t.Errorf("metricSum(%s) = %v, want %v", tc.metric, got, tc.want)
			}
		})
	}
}

func TestShellJoin(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain", []string{"ip", "netns", "exec", "x"}, "ip netns exec x"},
		{"empty argument", []string{"agent", "-kubednscm", ""}, "agent -kubednscm ''"},
		{"space", []string{"echo", "a b"}, "echo 'a b'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shellJoin(tc.args); got != tc.want {
				t.Errorf("shellJoin(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}
