package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// skippedWithoutRoot is what the loopback mode does not show.
var skippedWithoutRoot = []string{
	"network namespaces (pod -> node -> kube-dns) and the pod's own resolv.conf",
	"the agent's interface (169.254.20.10) and its iptables NOTRACK rules (-setupinterface=false -setupiptables=false)",
	"kill -9 and the fallback of the pod's lookups to kube-dns",
	"restart adopting leftovers, and the teardown on SIGTERM",
}

// loopback runs NSD and the agent on 127.0.0.1 with unprivileged ports.
type loopback struct {
	d                       *demo
	dir                     string
	nsdPort, dnsPort        int
	metricsPort, healthPort int
	agent                   *proc
	dnsAddr, metricsURL     string
}

// loopbackSteps runs step 4 without root.
func (d *demo) loopbackSteps() {
	l := &loopback{d: d, dir: filepath.Join(d.dir, "loopback")}
	why := "not root"
	if os.Geteuid() == 0 {
		why = "loopback mode chosen"
	}
	d.printf("\n%s: the agent runs on a loopback port instead of a node built from network namespaces.\nSkipped:\n", why)
	for _, s := range skippedWithoutRoot {
		d.printf("  - %s\n", s)
	}
	ok := d.step("Loopback: NSD authoritative for cluster.local on 127.0.0.1", true, l.startNSD)
	ok = d.step("Agent on a 127.0.0.1 port, no interface, no iptables", ok, l.startAgent)
	d.step("Resolve through the agent twice; the cache hit in /metrics", ok, l.resolve)
	d.step("SIGTERM the agent", ok, l.stop)
	d.skip("Node in network namespaces, kill -9 fallback, restart, upgrade, teardown", why+": the node steps listed above were skipped")
}

// freeDNSPort returns a 127.0.0.1 port free for both UDP and TCP.
func freeDNSPort() (int, error) {
	for range 50 {
		t, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := t.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		t.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP on 127.0.0.1")
}

func (l *loopback) startNSD(ctx context.Context) (string, error) {
	nsd, err := binary("nsd", "NSD_BIN")
	if err != nil {
		return "", err
	}
	if l.nsdPort, err = freeDNSPort(); err != nil {
		return "", err
	}
	dir := filepath.Join(l.dir, "nsd")
	conf, err := writeNSDConfig(dir, []string{"127.0.0.1"}, l.nsdPort)
	if err != nil {
		return "", err
	}
	args := []string{nsd, "-d", "-c", conf}
	l.d.show(shellJoin(args)+" &", "")
	p, err := l.d.startProc("nsd", filepath.Join(dir, "nsd.out"), nil, args...)
	if err != nil {
		return "", err
	}
	l.d.onCleanup("stop NSD", p.kill)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.nsdPort))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a, err := query(addr, "tcp", serviceFQDN); err == nil && a == serviceAddr {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			return "", fmt.Errorf("NSD not answering on %s within 10s: %s %s", addr, p.log(), log)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Sprintf("NSD pid %d on %s answers %s", p.pid(), addr, serviceFQDN), nil
}

// corefile is the agent's configuration on loopback: the official
// ConfigMap's shape with explicit ports.
func (l *loopback) corefile() string {
	up := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.nsdPort))
	return fmt.Sprintf(`cluster.local:%[1]d {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
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
    bind 127.0.0.1
    forward . %[2]s
    prometheus 127.0.0.1:%[3]d
}
`, l.dnsPort, up, l.metricsPort, l.healthPort)
}

func (l *loopback) startAgent(ctx context.Context) (string, error) {
	bin, err := binary("agent", "AGENT_BIN")
	if err != nil {
		return "", err
	}
	if l.dnsPort, err = freeDNSPort(); err != nil {
		return "", err
	}
	ports, err := freeTCPPorts(2)
	if err != nil {
		return "", err
	}
	l.metricsPort, l.healthPort = ports[0], ports[1]
	l.dnsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(l.dnsPort))
	l.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", l.metricsPort)
	conf := filepath.Join(l.dir, "Corefile")
	if err := os.WriteFile(conf, []byte(l.corefile()), 0o644); err != nil {
		return "", err
	}
	l.d.printf("Corefile %s:\n", conf)
	for line := range strings.SplitSeq(strings.TrimRight(l.corefile(), "\n"), "\n") {
		l.d.printf("    %s\n", line)
	}
	args := []string{bin,
		"-localip", "127.0.0.1",
		"-mode", "injection",
		"-conf", conf,
		"-basecorefile", filepath.Join(l.dir, "no-template"), // no template: -conf is served as is
		"-kubednscm", "",
		"-setupinterface=false",
		"-setupiptables=false",
		"-metrics-listen-address", "",
		"-dns.port", strconv.Itoa(l.dnsPort),
		"-rundir", filepath.Join(l.dir, "run"),
		"-lameduck", "0s",
	}
	l.d.show(shellJoin(args)+" &", "")
	p, err := l.d.startProc("agent", filepath.Join(l.dir, "agent.log"), nil, args...)
	if err != nil {
		return "", err
	}
	l.agent = p
	l.d.onCleanup("stop the agent", func() { _, _ = p.term(10 * time.Second) })
	if err := p.waitLog(ctx, "] serving ", 30*time.Second); err != nil {
		return "", err
	}
	for _, line := range grepLines(p.log(), "serving", "node:") {
		l.d.printf("    %s\n", line)
	}
	return fmt.Sprintf("agent pid %d serving on %s", p.pid(), l.dnsAddr), nil
}

func (l *loopback) resolve(ctx context.Context) (string, error) {
	before, err := httpGet(ctx, &http.Client{Timeout: 5 * time.Second}, l.metricsURL)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	dig, digErr := binary("dig", "")
	for i := range 2 {
		var addr string
		if digErr == nil {
			args := []string{dig, "@127.0.0.1", "-p", strconv.Itoa(l.dnsPort), "+noall", "+answer", "+stats", "+time=2", "+tries=1", serviceFQDN, "A"}
			out, err := runCmd(ctx, args...)
			l.d.show(shellJoin(args), strings.Join(grepLines(out, "IN\tA", "Query time", "SERVER:"), "\n"))
			if err != nil {
				return "", err
			}
			for line := range strings.SplitSeq(out, "\n") {
				if f := strings.Fields(line); len(f) >= 5 && f[3] == "A" {
					addr = f[4]
				}
			}
		} else {
			if addr, err = query(l.dnsAddr, "udp", serviceFQDN); err != nil {
				return "", err
			}
			l.d.printf("query %d: %s A -> %s (dig not installed: asked with a Go client)\n", i+1, serviceFQDN, addr)
		}
		if addr != serviceAddr {
			return "", fmt.Errorf("%s = %q, want %s", serviceFQDN, addr, serviceAddr)
		}
	}
	after, err := httpGet(ctx, &http.Client{Timeout: 5 * time.Second}, l.metricsURL)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	l.d.printf("GET %s, the coredns_cache_hits_total and coredns_cache_misses_total lines:\n", l.metricsURL)
	l.d.show("",
		strings.Join(grepLines(after, "coredns_cache_hits_total{", "coredns_cache_misses_total{"), "\n"))
	hits := metricSum(after, "coredns_cache_hits_total") - metricSum(before, "coredns_cache_hits_total")
	misses := metricSum(after, "coredns_cache_misses_total") - metricSum(before, "coredns_cache_misses_total")
	if hits < 1 {
		return "", fmt.Errorf("no cache hit in the metrics (hits +%v, misses +%v)", hits, misses)
	}
	return fmt.Sprintf("%s -> %s twice; cache hits +%v, misses +%v", serviceFQDN, serviceAddr, hits, misses), nil
}

func (l *loopback) stop(context.Context) (string, error) {
	l.d.show(fmt.Sprintf("kill -TERM %d", l.agent.pid()), "")
	took, err := l.agent.term(20 * time.Second)
	if err != nil {
		return "", fmt.Errorf("agent exit after SIGTERM: %w\n%s", err, l.agent.tail(10))
	}
	return fmt.Sprintf("clean exit in %v", took.Round(time.Millisecond)), nil
}

// query asks addr for name's A record and returns the first address.
func query(addr, network, name string) (string, error) {
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return "", fmt.Errorf("%s A @%s: %w", name, addr, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String(), nil
		}
	}
	return "", fmt.Errorf("%s A @%s: %s without an address", name, addr, dns.RcodeToString[r.Rcode])
}
