package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodelocaldns/nodelocaldns/tests/netns"
	"github.com/nodelocaldns/nodelocaldns/tests/resolvconf"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Addresses of the test's little cluster. They exist only inside the
// network namespaces the test creates.
const (
	localIP     = "169.254.20.10" // the agent (node-local cache)
	localIP6    = "fd00:20::10"   // the agent's IPv6 local IP
	kubeDNSIP   = "10.96.0.10"    // kube-dns ClusterIP (held by the kube-dns netns)
	upstreamIP  = "10.96.0.11"    // kube-dns-upstream ClusterIP (interception mode forwards here)
	externalIP  = "10.201.0.53"   // the node's upstream resolver for external names
	podIP       = "10.244.0.2"
	podGW       = "10.244.0.1"
	podIP6      = "fd00:244::2"
	podGW6      = "fd00:244::1"
	kubeNodeIP  = "10.200.0.1"
	kubeDNSHost = "10.200.0.2"
	ifaceName   = "nodelocaldns"
	metricsPort = "9253"
)

// Names in NSD's zones, and what they resolve to.
const (
	clusterName    = "web"                           // short name, found through the search path
	clusterFQDN    = "web.default.svc.cluster.local" // its full name
	clusterAddr    = "10.244.1.7"                    // its A record
	externalName   = "www.example.com"               // served by the node's upstream
	externalAddr   = "192.0.2.80"                    // its A record
	kubernetesFQDN = "kubernetes.default.svc.cluster.local"
)

// cluster is one node built from network namespaces: pod <-veth-> node
// <-veth-> kube-dns. The node runs the agent; kube-dns runs NSD holding the
// kube-dns ClusterIP, the kube-dns-upstream ClusterIP and the node's
// upstream resolver address.
type cluster struct {
	t                  *testing.T
	id                 string
	pod, node, kubeDNS string // netns names
	dir                string
	agentBin           string
	corefile           string
	interception       bool
	ipv6               bool
	nsd                *exec.Cmd
}

type clusterOpts struct {
	interception bool // the agent also takes over the kube-dns ClusterIP
	ipv6         bool // the agent also serves an IPv6 local IP
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	testenv.RequireRoot(t)
	c := &cluster{t: t, dir: t.TempDir(), interception: o.interception, ipv6: o.ipv6}
	c.agentBin = testenv.Binary(t, "agent", "AGENT_BIN")
	nsdBin := testenv.Binary(t, "nsd", "NSD_BIN")
	for _, tool := range []string{"ip", "iptables-save", "getent", "dig"} {
		testenv.Binary(t, tool, "")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	c.id = hex.EncodeToString(b)
	c.pod, c.node, c.kubeDNS = "nldpod-"+c.id, "nldnode-"+c.id, "nldkdns-"+c.id
	t.Cleanup(c.destroy)
	c.build()
	c.startNSD(nsdBin)
	c.writeCorefile()
	return c
}

// build creates the namespaces, links, addresses and routes.
func (c *cluster) build() {
	for _, ns := range []string{c.pod, c.node, c.kubeDNS} {
		c.must("ip", "netns", "add", ns)
		c.mustIn(ns, "ip", "link", "set", "lo", "up")
	}
	// pod <-> node
	c.mustIn(c.node, "ip", "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", c.pod)
	c.mustIn(c.node, "ip", "addr", "add", podGW+"/24", "dev", "vpod")
	c.mustIn(c.node, "ip", "-6", "addr", "add", podGW6+"/64", "dev", "vpod", "nodad")
	c.mustIn(c.node, "ip", "link", "set", "vpod", "up")
	c.mustIn(c.pod, "ip", "addr", "add", podIP+"/24", "dev", "eth0")
	c.mustIn(c.pod, "ip", "-6", "addr", "add", podIP6+"/64", "dev", "eth0", "nodad")
	c.mustIn(c.pod, "ip", "link", "set", "eth0", "up")
	c.mustIn(c.pod, "ip", "route", "add", "default", "via", podGW)
	c.mustIn(c.pod, "ip", "-6", "route", "add", "default", "via", podGW6)
	// node <-> kube-dns
	c.mustIn(c.node, "ip", "link", "add", "vkdns", "type", "veth", "peer", "name", "eth0", "netns", c.kubeDNS)
	c.mustIn(c.node, "ip", "addr", "add", kubeNodeIP+"/24", "dev", "vkdns")
	c.mustIn(c.node, "ip", "link", "set", "vkdns", "up")
	c.mustIn(c.kubeDNS, "ip", "addr", "add", kubeDNSHost+"/24", "dev", "eth0")
	c.mustIn(c.kubeDNS, "ip", "link", "set", "eth0", "up")
	c.mustIn(c.kubeDNS, "ip", "route", "add", "default", "via", kubeNodeIP)
	for _, ip := range []string{kubeDNSIP, upstreamIP, externalIP} {
		c.mustIn(c.kubeDNS, "ip", "addr", "add", ip+"/32", "dev", "lo")
	}
	c.mustIn(c.node, "ip", "route", "add", "10.96.0.0/16", "via", kubeDNSHost)
	c.mustIn(c.node, "ip", "route", "add", externalIP+"/32", "via", kubeDNSHost)
	c.mustIn(c.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The ICMP rate limits (net.ipv4.icmp_ratelimit, net.ipv6.icmp.ratelimit)
	// keep the kernel's defaults here: the agent sets them (-icmp-ratelimit=0
	// in startAgent), as it does on a real node.
	// resolv.conf files, read through `ip netns exec`.
	c.writeNetnsFile(c.node, "resolv.conf", "nameserver "+externalIP+"\n")
	c.writeNetnsFile(c.pod, "resolv.conf", c.podResolvConf())
}

// podResolvConf is what the kubelet writes for a pod the webhook injected:
// the webhook's own code computes the dnsConfig, tests/resolvconf renders it.
// In interception mode the pod is not injected: it has the plain
// ClusterFirst resolv.conf pointing at the kube-dns ClusterIP.
func (c *cluster) podResolvConf() string {
	if c.interception {
		return "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver " + kubeDNSIP + "\noptions ndots:5\n"
	}
	opts, err := inject.BaseOptions(3, 1, 2)
	if err != nil {
		c.t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: "default"}, Spec: corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst}}
	res := inject.Inject(pod, "default", nil, inject.Config{
		LocalIPs: []string{localIP}, KubeDNSIPs: []string{kubeDNSIP}, ClusterDomain: "cluster.local", Options: opts,
	})
	if !res.Injected {
		c.t.Fatalf("webhook did not inject the test pod: %s %v", res.Reason, res.Warnings)
	}
	return resolvconf.Render(res.DNSConfig)
}

func (c *cluster) writeNetnsFile(ns, name, content string) {
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// destroy removes everything the cluster created. Processes inside the
// namespaces are this test's own (agents are stopped by their own cleanup).
func (c *cluster) destroy() {
	if c.nsd != nil && c.nsd.Process != nil {
		_ = c.nsd.Process.Kill()
		_ = c.nsd.Wait()
	}
	for _, ns := range []string{c.pod, c.node, c.kubeDNS} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
}

func (c *cluster) startNSD(bin string) {
	dir := filepath.Join(c.dir, "nsd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	zones := map[string]string{
		"cluster.local": `$TTL 30
@ IN SOA ns.cluster.local. admin.cluster.local. 1 3600 600 86400 5
@ IN NS ns.cluster.local.
ns IN A ` + kubeDNSIP + `
kubernetes.default.svc IN A 10.96.0.1
web.default.svc IN A ` + clusterAddr + `
kube-dns.kube-system.svc IN A ` + kubeDNSIP + `
`,
		"example.com": `$TTL 30
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 5
@ IN NS ns.example.com.
ns IN A ` + externalIP + `
www IN A ` + externalAddr + `
`,
	}
	conf := fmt.Sprintf(`server:
  ip-address: %s
  ip-address: %s
  ip-address: %s
  port: 53
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: %q
  pidfile: %q
  logfile: %q
  xfrdfile: %q
  zonelistfile: %q
  database: ""
  verbosity: 1
  # No response rate limiting: the load drills send thousands of NXDOMAINs.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
`, kubeDNSIP, upstreamIP, externalIP, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"),
		filepath.Join(dir, "xfrd.state"), filepath.Join(dir, "zone.list"))
	for name, text := range zones {
		if err := os.WriteFile(filepath.Join(dir, name+".zone"), []byte(text), 0o644); err != nil {
			c.t.Fatal(err)
		}
		conf += fmt.Sprintf("zone:\n  name: %s\n  zonefile: %s.zone\n", name, name)
	}
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		c.t.Fatal(err)
	}
	var out bytes.Buffer
	c.nsd = exec.Command("ip", "netns", "exec", c.kubeDNS, bin, "-d", "-c", confPath)
	c.nsd.Stdout, c.nsd.Stderr = &out, &out
	c.nsd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.nsd.Start(); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		up := 0
		for _, ip := range []string{kubeDNSIP, upstreamIP, externalIP} {
			if ans, err := c.digIn(c.kubeDNS, ip, clusterFQDN); err == nil && ans == clusterAddr {
				up++
			}
		}
		if up == 3 {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			c.t.Fatalf("nsd did not answer in 10s: %s %s", out.String(), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeCorefile writes the official ConfigMap's Corefile with the PILLARs
// replaced as node-cache's DaemonSet does it.
func (c *cluster) writeCorefile() {
	binds := localIP
	clusterDNS := kubeDNSIP
	if c.interception {
		binds += " " + kubeDNSIP
		clusterDNS = upstreamIP
	}
	if c.ipv6 {
		binds += " " + localIP6
	}
	block := func(zone, fwd, extra string) string {
		return fmt.Sprintf(`%s:53 {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    reload
    loop
    bind %s
    forward . %s
    prometheus :%s
%s}
`, zone, binds, fwd, metricsPort, extra)
	}
	text := block("cluster.local", clusterDNS+" {\n        force_tcp\n    }", "    health "+localIP+":8080\n") +
		block("in-addr.arpa", clusterDNS+" {\n        force_tcp\n    }", "") +
		block(".", "/etc/resolv.conf", "")
	c.corefile = filepath.Join(c.dir, "Corefile")
	if err := os.WriteFile(c.corefile, []byte(text), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// localIPs is the agent's -localip.
func (c *cluster) localIPs() string {
	ips := localIP
	if c.interception {
		ips += "," + kubeDNSIP
	}
	if c.ipv6 {
		ips += "," + localIP6
	}
	return ips
}

// agent is one agent process in the node namespace.
type agent struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs bin/agent in the node namespace with the official
// DaemonSet's arguments plus the test's paths, and waits until it answers.
func (c *cluster) startAgent(extra ...string) *agent {
	c.t.Helper()
	args := []string{"netns", "exec", c.node, c.agentBin,
		"-localip", c.localIPs(),
		"-conf", c.corefile, "-basecorefile", c.corefile,
		"-kubednscm", "",
		"-rundir", filepath.Join(c.dir, "run"),
		"-metrics-listen-address", "",
		"-syncinterval", "1s",
		"-lameduck", "1s",
		// With the agent killed, the node answers queries to the local IP
		// with ICMP port unreachable and glibc moves to the next nameserver
		// at once; the kernel's default per-destination ICMP rate limit (a
		// burst of 6, then 1/s per pod) would turn most of those into 1 s
		// timeouts. The agent lifts it, as the manifests have it do.
		"-icmp-ratelimit=0",
	}
	if c.interception {
		args = append(args, "-upstreamsvc", "kube-dns-upstream")
	}
	args = append(args, extra...)
	a := &agent{t: c.t, log: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command("ip", args...)
	a.cmd.Env = append(os.Environ(), "KUBE_DNS_SERVICE_HOST="+kubeDNSIP, "KUBE_DNS_UPSTREAM_SERVICE_HOST="+upstreamIP)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	c.t.Cleanup(func() {
		a.kill()
		if c.t.Failed() {
			c.t.Logf("agent %d log:\n%s", a.cmd.Process.Pid, a.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(a.log.String(), "serving") {
		select {
		case <-a.done:
			c.t.Fatalf("agent exited at start (%v):\n%s", a.err, a.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agent not serving after 15s:\n%s", a.log.String())
		}
	}
	return a
}

func (a *agent) kill() {
	select {
	case <-a.done:
	default:
		_ = a.cmd.Process.Signal(syscall.SIGKILL)
		<-a.done
	}
}

// term sends SIGTERM and returns how long the agent took to exit (failing
// the test after 20 s).
func (a *agent) term() time.Duration {
	a.t.Helper()
	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.kill()
		a.t.Fatalf("agent did not exit within 20s of SIGTERM:\n%s", a.log.String())
	}
	if a.err != nil {
		a.t.Errorf("agent exited with %v after SIGTERM:\n%s", a.err, a.log.String())
	}
	return time.Since(start)
}

// must runs a command in the host namespace (only `ip netns ...`).
func (c *cluster) must(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// icmpRateLimits returns the node namespace's net.ipv4.icmp_ratelimit and
// net.ipv6.icmp.ratelimit, read from /proc/sys inside the namespace.
func (c *cluster) icmpRateLimits() (v4, v6 string) {
	c.t.Helper()
	v4 = strings.TrimSpace(c.mustIn(c.node, "cat", "/proc/sys/net/ipv4/icmp_ratelimit"))
	v6 = strings.TrimSpace(c.mustIn(c.node, "cat", "/proc/sys/net/ipv6/icmp/ratelimit"))
	return v4, v6
}

// in runs a command inside namespace ns.
func (c *cluster) in(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *cluster) mustIn(ns string, args ...string) string {
	c.t.Helper()
	out, err := c.in(ns, args...)
	if err != nil {
		c.t.Fatalf("in %s: %v: %v\n%s", ns, args, err, out)
	}
	return out
}

// digIn asks server for name's A record from namespace ns and returns the
// first address of the answer.
func (c *cluster) digIn(ns, server, name string) (string, error) {
	out, err := c.in(ns, "dig", "+short", "+time=1", "+tries=1", "@"+server, name, "A")
	if err != nil {
		return "", fmt.Errorf("dig @%s %s: %w: %s", server, name, err, out)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	return line, nil
}

// getent resolves name in the pod with glibc (resolv.conf, search path) and
// returns the first address and how long it took.
func (c *cluster) getent(name string) (string, time.Duration, error) {
	start := time.Now()
	out, err := c.in(c.pod, "getent", "hosts", name)
	d := time.Since(start)
	if err != nil {
		return "", d, fmt.Errorf("getent hosts %s: %w: %s", name, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "", d, fmt.Errorf("getent hosts %s: empty output", name)
	}
	return f[0], d, nil
}

// ourRules returns the agent's rules on the node (lines of iptables-save
// and ip6tables-save of both backends carrying the agent's comment).
func (c *cluster) ourRules() []string {
	c.t.Helper()
	var rules []string
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := c.in(c.node, save)
		if err != nil {
			continue // e.g. legacy tables never loaded in this netns
		}
		for l := range strings.SplitSeq(out, "\n") {
			if strings.Contains(l, "nodelocaldns:") {
				rules = append(rules, save+" "+l)
			}
		}
	}
	return rules
}

// linkAddrs returns the addresses on the agent's interface, nil if it is
// gone.
func (c *cluster) linkAddrs() []string {
	out, err := c.in(c.node, "ip", "-o", "addr", "show", "dev", ifaceName)
	if err != nil {
		return nil
	}
	var addrs []string
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && (f[2] == "inet" || f[2] == "inet6") && !strings.HasPrefix(f[3], "fe80:") {
			addrs = append(addrs, f[3])
		}
	}
	return addrs
}

// wantRules is how many rules the agent keeps: 12 per local IP.
func (c *cluster) wantRules() int {
	return 12 * len(strings.Split(c.localIPs(), ","))
}

// metrics scrapes the agent's Prometheus endpoint from inside the node.
func (c *cluster) metrics() string {
	c.t.Helper()
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			return netns.DialTCP(c.node, net.JoinHostPort(localIP, metricsPort))
		}},
	}
	resp, err := client.Get("http://" + net.JoinHostPort(localIP, metricsPort) + "/metrics")
	if err != nil {
		c.t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

// metricSum adds up every sample of metric whose labels contain all of the
// given label pairs (e.g. `type="A"`).
func metricSum(text, metric string, labels ...string) float64 {
	sum := 0.0
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// perfResult is what dnsperf reports.
type perfResult struct {
	sent, completed, lost int
	raw                   string
}

var perfRe = map[string]*regexp.Regexp{
	"sent":      regexp.MustCompile(`Queries sent:\s+(\d+)`),
	"completed": regexp.MustCompile(`Queries completed:\s+(\d+)`),
	"lost":      regexp.MustCompile(`Queries lost:\s+(\d+)`),
}

// startPerf runs dnsperf in the pod against server at qps for seconds; the
// result arrives on the returned channel. With misses, every query is a new
// name (NXDOMAIN from NSD), so every one is forwarded upstream.
func (c *cluster) startPerf(server string, qps, seconds int, misses bool) <-chan perfResult {
	c.t.Helper()
	testenv.Binary(c.t, "dnsperf", "")
	qfile := filepath.Join(c.dir, "queries.txt")
	var b strings.Builder
	if misses {
		for i := 0; i < qps*seconds+qps; i++ {
			fmt.Fprintf(&b, "n%d.example.com A\n", i)
		}
	} else {
		for range 50 {
			fmt.Fprintf(&b, "%s A\n%s A\n%s A\n", clusterFQDN, kubernetesFQDN, externalName)
		}
	}
	if err := os.WriteFile(qfile, []byte(b.String()), 0o644); err != nil {
		c.t.Fatal(err)
	}
	ch := make(chan perfResult, 1)
	go func() {
		// -t 2: a query unanswered for 2 s counts as lost.
		out, err := c.in(c.pod, "dnsperf", "-s", server, "-d", qfile, "-Q", strconv.Itoa(qps), "-l", strconv.Itoa(seconds), "-t", "2", "-c", "4")
		r := perfResult{raw: out}
		for k, re := range perfRe {
			m := re.FindStringSubmatch(out)
			if m == nil {
				continue
			}
			n, _ := strconv.Atoi(m[1])
			switch k {
			case "sent":
				r.sent = n
			case "completed":
				r.completed = n
			case "lost":
				r.lost = n
			}
		}
		if err != nil || r.sent == 0 {
			r.raw = fmt.Sprintf("dnsperf failed (%v): %s", err, out)
			r.sent = -1
		}
		ch <- r
	}()
	return ch
}
