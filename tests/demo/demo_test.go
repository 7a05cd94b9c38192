package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// TestDemo runs the demo program: the agent part alone on loopback, and the
// whole demo (the netns node when root). Missing binaries skip (fail in CI).
func TestDemo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		needs    []string // binaries: name, env var pairs
		root     bool
		wantPass []string // substrings of step names that must PASS
	}{
		{
			name:     "loopback agent",
			cfg:      Config{Kube: false, Node: NodeLoopback},
			needs:    []string{"agent", "AGENT_BIN", "nsd", "NSD_BIN", "dig", ""},
			wantPass: []string{"Loopback: NSD", "Agent on a 127.0.0.1 port", "cache hit", "SIGTERM"},
		},
		{
			name: "full",
			cfg:  Config{Kube: true, Node: NodeAuto},
			needs: []string{"kube-apiserver", "KUBE_APISERVER_BIN", "etcd", "ETCD_BIN", "webhook", "WEBHOOK_BIN",
				"agent", "AGENT_BIN", "nsd", "NSD_BIN", "dig", "", "getent", "", "ip", ""},
			wantPass: []string{"Control plane", "Webhook:", "Pods", "Webhook down", "cache hit"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < len(tc.needs); i += 2 {
				testenv.Binary(t, tc.needs[i], tc.needs[i+1])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			var out bytes.Buffer
			results, err := run(ctx, Config{Kube: tc.cfg.Kube, Node: tc.cfg.Node, Out: &out})
			t.Logf("demo output:\n%s", out.String())
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			for _, want := range tc.wantPass {
				found := false
				for _, r := range results {
					if strings.Contains(r.Step, want) {
						found = true
						if r.Status != Pass {
							t.Errorf("step %q: %s (%v)", r.Step, r.Status, r.Err)
						}
					}
				}
				if !found {
					t.Errorf("no step matching %q in %+v", want, results)
				}
			}
			if os.Geteuid() == 0 && tc.cfg.Node == NodeAuto {
				checkNetnsSteps(t, results)
			}
			checkCleanedUp(t)
		})
	}
}

// checkNetnsSteps requires every step of the netns node to pass.
func checkNetnsSteps(t *testing.T, results []Result) {
	t.Helper()
	for _, want := range []string{"Node: network namespaces", "Agent: bin/agent", "kill -9", "Restart", "Surge upgrade", "SIGTERM the last"} {
		found := false
		for _, r := range results {
			if strings.Contains(r.Step, want) {
				found = true
				if r.Status != Pass {
					t.Errorf("step %q: %s (%v)", r.Step, r.Status, r.Err)
				}
			}
		}
		if !found {
			t.Errorf("no step matching %q", want)
		}
	}
}

// checkCleanedUp fails if a network namespace of this process's demo is left.
func checkCleanedUp(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "nldemo-") {
			if _, err := os.Stat("/etc/netns/" + e.Name()); err == nil {
				t.Errorf("network namespace %s (with /etc/netns files) left behind", e.Name())
			}
		}
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
