// Package testenv holds the small rules every integration test follows: where
// the real binaries are, and how a test that needs root or a tool behaves when
// it is missing (skip with a reason locally, fail under CI).
package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// InCI reports whether the CI environment variable is set. Under CI a missing
// prerequisite is a failure, never a skip.
func InCI() bool { return os.Getenv("CI") != "" }

// Unavailable skips the test with reason, or fails it when running in CI.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing under CI: %s", reason)
	}
	t.Skipf("skipping: %s (set CI=1 to make this a failure)", reason)
}

// RequireRoot skips (or fails under CI) a test that needs root, e.g. for
// network namespaces and iptables.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root (network namespaces, iptables)")
	}
}

// RepoRoot returns the repository root, found from this source file; in a
// binary built with -trimpath (bin/demo), where that path is the module's
// import path, from the working directory and its parents (the first with
// this module's go.mod).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if ok && filepath.IsAbs(file) {
		return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	}
	wd, _ := os.Getwd()
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/nodelocaldns/nodelocaldns\n") {
			return dir
		}
		if filepath.Dir(dir) == dir {
			return wd
		}
	}
}

// Binary returns the path of a tool. envVar (if non-empty and set) wins, then
// bin/<name> in the repository, then $PATH. A missing tool skips the test, or
// fails it under CI.
func Binary(t testing.TB, name, envVar string) string {
	t.Helper()
	if p, err := LookBinary(name, envVar); err == nil {
		return p
	}
	Unavailable(t, name+" not found (env "+envVar+", bin/, $PATH); run `make tools` or tests/install-deps.sh")
	return ""
}

// LookBinary is Binary without a test: it reports an error instead.
func LookBinary(name, envVar string) (string, error) {
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	local := filepath.Join(RepoRoot(), "bin", name)
	if _, err := os.Stat(local); err == nil {
		return local, nil
	}
	for _, dir := range []string{"", "/usr/sbin", "/sbin"} {
		if dir == "" {
			if p, err := exec.LookPath(name); err == nil {
				return p, nil
			}
			continue
		}
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// FreePort returns a port that is free for both UDP and TCP on 127.0.0.1
// (a DNS server binds both), or fails the test.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// FreePorts returns n distinct ports of 127.0.0.1 that were free for both
// UDP and TCP a moment ago. Every chosen port stays bound until all are
// chosen, so none repeats.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 50*n {
			return nil, fmt.Errorf("no %d ports free for both UDP and TCP on 127.0.0.1", n)
		}
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			u.Close()
			continue
		}
		held = append(held, u, l)
		ports = append(ports, port)
	}
	return ports, nil
}
