package app

import (
	"context"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		check   func(t *testing.T, o *Options)
		wantErr string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *Options) {
				if o.Port != 9443 || o.LocalDNSIP != "169.254.20.10" || o.KubeDNSService != "kube-system/kube-dns" ||
					o.ClusterDomain != "cluster.local" || o.Ndots != 3 || o.Timeout != 1 || o.Attempts != 2 ||
					!o.InjectHostNetwork || o.EnableHTTP2 || o.BindAddress != "" || o.ReadTimeout != 10*time.Second ||
					o.MaxRequestBytes != 4<<20 || o.TLSMinVersion != "1.2" {
					t.Errorf("unexpected defaults: %+v", o)
				}
				cfg, err := o.InjectConfig()
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(cfg.NoAgent.Labels, inject.DefaultNoAgentNodeLabels) || !slices.Equal(cfg.NoAgent.TolerationKeys, inject.DefaultNoAgentTolerations) {
					t.Errorf("default no-agent nodes %+v", cfg.NoAgent)
				}
			},
		},
		{
			name: "every flag",
			args: []string{"--cert-dir", "/certs", "--port", "10250", "--bind-address", "127.0.0.1", "--kubeconfig", "/kc",
				"--health-probe-bind-address", "127.0.0.1:0", "--metrics-bind-address", "0", "--local-dns-ip", "169.254.20.10, fd00::10",
				"--kube-dns-service", "dns/coredns", "--kube-dns-ip", "10.0.0.10,fd00::a", "--cluster-domain", "k8s.example",
				"--ndots", "5", "--timeout", "2", "--attempts", "3", "--inject-host-network=false", "--enable-http2",
				"--graceful-shutdown-timeout", "5s"},
			check: func(t *testing.T, o *Options) {
				cfg, err := o.InjectConfig()
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(cfg.LocalIPs, []string{"169.254.20.10", "fd00::10"}) || cfg.ClusterDomain != "k8s.example" || cfg.InjectHostNetwork {
					t.Errorf("inject config %+v", cfg)
				}
				if *cfg.Options[0].Value != "5" || *cfg.Options[1].Value != "2" || *cfg.Options[2].Value != "3" {
					t.Errorf("options %+v", cfg.Options)
				}
				if o.Port != 10250 || o.CertDir != "/certs" || o.BindAddress != "127.0.0.1" || o.Kubeconfig != "/kc" ||
					o.MetricsBindAddress != "0" || !o.EnableHTTP2 || o.GracefulShutdownTimeout != 5*time.Second ||
					!slices.Equal(splitList(o.KubeDNSIP), []string{"10.0.0.10", "fd00::a"}) {
					t.Errorf("options %+v", o)
				}
			},
		},
		{name: "port zero", args: []string{"--port", "0"}, wantErr: "--port"},
		{name: "port too big", args: []string{"--port", "70000"}, wantErr: "--port"},
		{name: "port not a number", args: []string{"--port", "https"}, wantErr: "invalid value"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "not defined"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "bad local ip", args: []string{"--local-dns-ip", "169.254.20"}, wantErr: "--local-dns-ip"},
		{name: "three local ips", args: []string{"--local-dns-ip", "1.1.1.1,2.2.2.2,3.3.3.3"}, wantErr: "at most 2"},
		{name: "empty local ip", args: []string{"--local-dns-ip", ""}, wantErr: "at least one"},
		{name: "bad kube-dns ip", args: []string{"--kube-dns-ip", "kube-dns"}, wantErr: "--kube-dns-ip"},
		{name: "bad kube-dns service", args: []string{"--kube-dns-service", "a/b/c"}, wantErr: "--kube-dns-service"},
		{name: "bad cluster domain", args: []string{"--cluster-domain", "Bad_Domain"}, wantErr: "cluster domain"},
		{name: "ndots too big", args: []string{"--ndots", "16"}, wantErr: "ndots"},
		{name: "timeout zero", args: []string{"--timeout", "0"}, wantErr: "timeout"},
		{name: "attempts too big", args: []string{"--attempts", "6"}, wantErr: "attempts"},
		{name: "negative shutdown", args: []string{"--graceful-shutdown-timeout", "-1s"}, wantErr: "graceful"},
		{name: "zero read timeout", args: []string{"--read-timeout", "0"}, wantErr: "--read-timeout"},
		{name: "negative idle timeout", args: []string{"--idle-timeout", "-1s"}, wantErr: "--idle-timeout"},
		{name: "request limit over budget", args: []string{"--max-request-bytes", "8388608", "--request-body-budget", "4194304"}, wantErr: "--max-request-bytes"},
		{name: "tiny request limit", args: []string{"--max-request-bytes", "100"}, wantErr: "--max-request-bytes"},
		{name: "no connections", args: []string{"--max-connections", "0"}, wantErr: "--max-connections"},
		{name: "TLS 1.1", args: []string{"--tls-min-version", "1.1"}, wantErr: "--tls-min-version"},
		{name: "bad node label", args: []string{"--no-agent-node-labels", "type=virtual kubelet"}, wantErr: "--no-agent-node-labels"},
		{name: "bad toleration key", args: []string{"--no-agent-tolerations", "a b"}, wantErr: "--no-agent-tolerations"},
		{
			name: "node policy and server limits",
			args: []string{"--no-agent-node-labels", "pool=edge,example.com/serverless", "--no-agent-tolerations", "", "--read-timeout", "3s",
				"--write-timeout", "4s", "--idle-timeout", "5s", "--max-request-bytes", "1048576", "--request-body-budget", "2097152", "--tls-min-version", "1.3"},
			check: func(t *testing.T, o *Options) {
				cfg, err := o.InjectConfig()
				if err != nil {
					t.Fatal(err)
				}
				if want := []inject.NodeLabel{{Key: "pool", Value: "edge"}, {Key: "example.com/serverless"}}; !slices.Equal(cfg.NoAgent.Labels, want) || len(cfg.NoAgent.TolerationKeys) != 0 {
					t.Errorf("no-agent nodes %+v", cfg.NoAgent)
				}
				if o.ReadTimeout != 3*time.Second || o.WriteTimeout != 4*time.Second || o.IdleTimeout != 5*time.Second ||
					o.MaxRequestBytes != 1<<20 || o.RequestBodyBudget != 2<<20 || o.TLSMinVersion != "1.3" {
					t.Errorf("server options %+v", o)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestParseFlagsHelp(t *testing.T) {
	var out strings.Builder
	_, err := ParseFlags([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("error = %v, want flag.ErrHelp", err)
	}
	for _, name := range []string{"cert-dir", "kube-dns-ip", "inject-host-network", "enable-http2"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not list --%s", name)
		}
	}
}

// TestRunRefusesBadFlags checks Run returns the error before starting
// anything (main then exits non-zero).
func TestRunRefusesBadFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Run(ctx, []string{"--ndots", "99"})
	if err == nil || !strings.Contains(err.Error(), "ndots") {
		t.Fatalf("Run = %v, want an ndots error", err)
	}
}

// TestRunBadKubeconfig checks a missing kubeconfig is a clear error.
func TestRunBadKubeconfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Run(ctx, []string{"--kubeconfig", t.TempDir() + "/missing", "--metrics-bind-address", "0", "--health-probe-bind-address", "0"})
	if err == nil || !strings.Contains(err.Error(), "kubeconfig") {
		t.Fatalf("Run = %v, want a kubeconfig error", err)
	}
}

func TestParseNamespacedName(t *testing.T) {
	for _, tc := range []struct {
		in, def, ns, name string
		wantErr           bool
	}{
		{in: "kube-system/kube-dns", def: "kube-system", ns: "kube-system", name: "kube-dns"},
		{in: "coredns", def: "kube-system", ns: "kube-system", name: "coredns"},
		{in: "/x", def: "kube-system", wantErr: true},
		{in: "x/", def: "kube-system", wantErr: true},
		{in: "a/b/c", def: "kube-system", wantErr: true},
		{in: "", def: "kube-system", wantErr: true},
		// No default: the namespace is required.
		{in: "node-local-dns/certs", ns: "node-local-dns", name: "certs"},
		{in: "certs", wantErr: true},
		{in: "/certs", wantErr: true},
		{in: "a/b/c", wantErr: true},
	} {
		t.Run(tc.def+":"+tc.in, func(t *testing.T) {
			ns, name, err := parseNamespacedName(tc.in, tc.def)
			if (err != nil) != tc.wantErr || ns != tc.ns || name != tc.name {
				t.Errorf("parseNamespacedName(%q, %q) = %q, %q, %v", tc.in, tc.def, ns, name, err)
			}
		})
	}
}

// TestStatusFlags checks that `webhook status` takes the flags that decide
// which pods the webhook would inject, and that AddFlags registers the
// webhook's options (tests/docs checks that each of them is documented).
func TestStatusFlags(t *testing.T) {
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	NewOptions().AddFlags(fs)
	var status strings.Builder
	_ = RunStatus(context.Background(), []string{"-h"}, io.Discard, &status)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "zap-") {
			n++
		}
	})
	for _, name := range []string{"webhook-config-name", "no-agent-node-labels", "no-agent-tolerations", "inject-host-network", "kubeconfig"} {
		if !strings.Contains(status.String(), "-"+name) {
			t.Errorf("webhook status -h does not list --%s", name)
		}
	}
	if n < 25 {
		t.Errorf("only %d flags seen", n)
	}
}
