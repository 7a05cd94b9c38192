package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The project's and the cluster's DNS addresses.
const (
	localDNSIP    = "169.254.20.10"
	clusterDomain = "cluster.local"
	injectLabel   = "node-local-dns-injection"
	agentNS       = "kube-system"
	agentDS       = "node-local-dns"
	agentIface    = "nodelocaldns"
)

// env is what make e2e-up wrote into bin/e2e/env, plus the repository root.
type env struct {
	vars       map[string]string
	repo       string
	kubectlBin string
}

func (e *env) get(key string) string { return e.vars[key] }

func loadEnv(path string) (*env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s (run make e2e-up first): %w", path, err)
	}
	defer f.Close()
	vars, err := parseEnv(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, k := range []string{"KUBECONFIG", "CLIENT_IMAGE", "KUBE_DNS_IP", "NODE_IP", "AGENT_IMAGE", "WEBHOOK_IMAGE"} {
		if vars[k] == "" {
			return nil, fmt.Errorf("%s: %s is not set", path, k)
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	repo := filepath.Dir(filepath.Dir(filepath.Dir(abs))) // bin/e2e/env
	kubectl := os.Getenv("KUBECTL_BIN")
	if kubectl == "" {
		kubectl = vars["KUBECTL"]
	}
	if kubectl == "" {
		kubectl = filepath.Join(repo, "bin", "kubectl")
	}
	return &env{vars: vars, repo: repo, kubectlBin: kubectl}, nil
}

// parseEnv reads KEY=VALUE lines; # starts a comment.
func parseEnv(r io.Reader) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: want KEY=VALUE, got %q", n, line)
		}
		vars[k] = v
	}
	return vars, sc.Err()
}

// kubectl runs kubectl against the e2e node and returns its stdout.
func (e *env) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.kubectlBin, append([]string{"--kubeconfig", e.get("KUBECONFIG")}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// onNode runs a command on the node (this process's network namespace).
func onNode(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// httpGet fetches url with a short timeout.
func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// poll calls fn every interval until it returns nil or ctx/timeout ends;
// the error is fn's last.
func poll(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}

// install runs tests/e2e/install.sh (kubectl apply -k or delete -k of the
// project in mode "builtin-certs" or "interception") with this kubectl.
func (e *env) install(ctx context.Context, verb, mode string) error {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(e.repo, "tests/e2e/install.sh"), verb, e.get("AGENT_IMAGE"), e.get("WEBHOOK_IMAGE"), mode)
	cmd.Env = append(os.Environ(), "KUBECTL_BIN="+e.kubectlBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("install.sh %s %s: %w: %s", verb, mode, err, strings.TrimSpace(string(out)))
	}
	return nil
}
