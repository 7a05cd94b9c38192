package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/tests/yamldocs"
)

// OfficialManifest is where the official node-local-dns manifest is kept.
const OfficialManifest = "/work/shared/reference/nodelocaldns.yaml"

// BuildAgent builds the agent binary into dir and returns its path. The
// AGENT_BIN environment variable names a prebuilt binary instead.
func BuildAgent(dir string) (string, error) {
	if p := os.Getenv("AGENT_BIN"); p != "" {
		return p, nil
	}
	out := filepath.Join(dir, "agent")
	cmd := exec.Command("go", "build", "-o", out, "./agent")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./agent: %w\n%s", err, b)
	}
	return out, nil
}

// ManifestCorefile returns the Corefile of the node-local-dns ConfigMap in
// a multi-document manifest.
func ManifestCorefile(manifest []byte) (string, error) {
	docs, err := yamldocs.Split(manifest)
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	for _, doc := range docs {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct{ Name string }
			Data     map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return "", fmt.Errorf("manifest: %w", err)
		}
		if obj.Kind == "ConfigMap" && obj.Data["Corefile"] != "" {
			return obj.Data["Corefile"], nil
		}
	}
	return "", errors.New("manifest has no ConfigMap with a Corefile")
}

// AgentOptions configure one agent process.
type AgentOptions struct {
	// Bin is the agent binary.
	Bin string
	// LocalIP is -localip: the agent serves DNS on LocalIP:53, health on
	// LocalIP:8080 and metrics on LocalIP:9253.
	LocalIP string
	// ClusterDNS is the ClusterIP of kube-dns-upstream
	// (KUBE_DNS_UPSTREAM_SERVICE_HOST): the cluster zones go there, port 53.
	ClusterDNS string
	// Upstreams are the kube-dns ConfigMap's upstreamNameservers, used for
	// every other name. Must not be empty: the host's /etc/resolv.conf is
	// never used by a test.
	Upstreams []string
	// Template is the Corefile template (Corefile.base).
	Template string
	// StubDomains is the kube-dns ConfigMap's stubDomains (domain to
	// upstream addresses); nil writes none.
	StubDomains map[string][]string
	// Args are appended to the agent's command line.
	Args []string
	// Prefix is prepended to the command line (e.g. ip netns exec NS).
	Prefix []string
	// NoWait returns right after the start, without waiting for answers.
	NoWait bool
}

// Agent is a running agent process.
type Agent struct {
	// DNS, Health and Metrics are the agent's addresses.
	DNS, Health, Metrics string
	dir                  string
	cmd                  *exec.Cmd
	done                 chan struct{}
	exitErr              error
}

// StartAgent starts the agent the way the official DaemonSet does
// (-localip, -conf, -upstreamsvc kube-dns-upstream, -pidfile) plus the
// mounted template, the kube-dns ConfigMap directory, and no node setup.
// It is stopped when the test ends.
func StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	if len(opts.Upstreams) == 0 {
		t.Fatal("StartAgent: Upstreams must be set (tests never use the host's resolv.conf)")
	}
	dir := t.TempDir()
	a := &Agent{
		DNS:     net.JoinHostPort(opts.LocalIP, "53"),
		Health:  net.JoinHostPort(opts.LocalIP, "8080"),
		Metrics: net.JoinHostPort(opts.LocalIP, "9253"),
		dir:     dir,
		done:    make(chan struct{}),
	}
	kubeDNS := filepath.Join(dir, "kube-dns")
	ups, _ := json.Marshal(opts.Upstreams)
	files := map[string][]byte{
		filepath.Join(dir, "Corefile.base"):           []byte(opts.Template),
		filepath.Join(kubeDNS, "upstreamNameservers"): ups,
	}
	if opts.StubDomains != nil {
		stubs, _ := json.Marshal(opts.StubDomains)
		files[filepath.Join(kubeDNS, "stubDomains")] = stubs
	}
	for path, content := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := append(append([]string{}, opts.Prefix...), opts.Bin,
		"-localip", opts.LocalIP,
		"-conf", filepath.Join(dir, "Corefile"),
		"-upstreamsvc", "kube-dns-upstream",
		"-pidfile", filepath.Join(dir, "agent.pid"),
		"-basecorefile", filepath.Join(dir, "Corefile.base"),
		"-kubednscm", kubeDNS,
		"-setupinterface=false",
		"-setupiptables=false",
		// No node setup, so nothing to tear down: a name of our own keeps
		// teardown away from any real nodelocaldns interface on this host.
		"-interfacename", fmt.Sprintf("nldfwd%06x", rand.N(1<<24)),
		"-metrics-listen-address", net.JoinHostPort(opts.LocalIP, "9353"),
		"-rundir", filepath.Join(dir, "run"),
		"-lameduck", "0s",
	)
	args = append(args, opts.Args...)
	a.cmd = exec.Command(args[0], args[1:]...)
	a.cmd.Env = append(os.Environ(), "KUBE_DNS_UPSTREAM_SERVICE_HOST="+opts.ClusterDNS)
	out, err := os.Create(filepath.Join(dir, "agent.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	a.cmd.Stdout, a.cmd.Stderr = out, out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	go func() { a.exitErr = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("agent output:\n%s", a.Log())
		}
	})
	if opts.NoWait || len(opts.Prefix) > 0 {
		return a
	}
	if err := a.waitReady(30 * time.Second); err != nil {
		t.Fatalf("agent on %s: %v\n%s", a.DNS, err, a.Log())
	}
	return a
}

// waitReady waits until the agent answers on its DNS address (a REFUSED
// or SERVFAIL counts: it is listening) and has written its pid file, which
// it does once its health and metrics endpoints listen too: DNS answers a
// moment earlier (before the loop probes), and a test reading the metrics
// right after the first answer could find nothing listening yet.
func (a *Agent) waitReady(d time.Duration) error {
	c := &dns.Client{Net: "tcp", Timeout: 300 * time.Millisecond}
	pidfile := filepath.Join(a.dir, "agent.pid")
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if exited, err := a.Exited(); exited {
			return fmt.Errorf("agent exited: %w", err)
		}
		m := new(dns.Msg)
		m.SetQuestion("ready.invalid.", dns.TypeA)
		if _, _, err := c.Exchange(m, a.DNS); err == nil {
			if b, err := os.ReadFile(pidfile); err == nil && strings.TrimSpace(string(b)) != "" {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not answering with a pid file written after %v", d)
}

// PID returns the agent's process id.
func (a *Agent) PID() int { return a.cmd.Process.Pid }

// Exited reports whether the process ended, and how.
func (a *Agent) Exited() (bool, error) {
	select {
	case <-a.done:
		return true, a.exitErr
	default:
		return false, nil
	}
}

// WaitExit waits up to d for the process to end.
func (a *Agent) WaitExit(d time.Duration) (bool, error) {
	select {
	case <-a.done:
		return true, a.exitErr
	case <-time.After(d):
		return false, nil
	}
}

// Stop sends SIGTERM and waits (at most 10s, then SIGKILL).
func (a *Agent) Stop() {
	if exited, _ := a.Exited(); exited {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if exited, _ := a.WaitExit(10 * time.Second); !exited {
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// Log returns the agent's output.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.out"))
	return string(b)
}

// RenderedCorefile returns the Corefile the agent wrote to -conf.
func (a *Agent) RenderedCorefile() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "Corefile"))
	return string(b)
}

// MetricsText fetches /metrics.
func (a *Agent) MetricsText(t testing.TB) string {
	t.Helper()
	return httpGet(t, "http://"+a.Metrics+"/metrics")
}

func httpGet(t testing.TB, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// MetricSum sums the samples of metric name whose labels contain every
// `key="value"` in labels (Prometheus text format).
func MetricSum(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer metric name
		}
		sp := strings.LastIndexByte(rest, ' ')
		series, value := rest[:sp], rest[sp+1:]
		ok := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum += v
		}
	}
	return sum
}
