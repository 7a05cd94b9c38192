package instance

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustRegister(t *testing.T, dir string) *Registry {
	t.Helper()
	r, err := Register(dir)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestLiveness(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(t *testing.T, dir string) (cleanup func())
		wantOther int
	}{
		{name: "alone", setup: func(*testing.T, string) func() { return func() {} }, wantOther: 0},
		{name: "another registry", setup: func(t *testing.T, dir string) func() {
			r := mustRegister(t, dir)
			return func() { r.Close() }
		}, wantOther: 1},
		{name: "stale unlocked file of a dead instance", setup: func(t *testing.T, dir string) func() {
			if err := os.WriteFile(filepath.Join(dir, "1-dead.lock"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, wantOther: 0},
		{name: "lock held by another process", setup: func(t *testing.T, dir string) func() {
			flock := testenv.Binary(t, "flock", "")
			cmd := exec.Command(flock, "-o", filepath.Join(dir, "2-other.lock"), "sleep", "30")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { _, err := os.Stat(filepath.Join(dir, "2-other.lock")); return err == nil })
			time.Sleep(100 * time.Millisecond)
			return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() } // SIGKILL
		}, wantOther: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cleanup := tc.setup(t, dir)
			me := mustRegister(t, dir)
			others, err := me.Others()
			if err != nil || len(others) != tc.wantOther {
				t.Fatalf("Others = %v, %v; want %d", others, err, tc.wantOther)
			}
			// When the other one goes away (Close or SIGKILL), it no longer
			// counts, and its files are cleaned up.
			cleanup()
			others, err = me.Others()
			if err != nil || len(others) != 0 {
				t.Errorf("Others after the other left = %v, %v; want none", others, err)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.Name() != me.ID()+lockSuffix {
					t.Errorf("leftover file %s", e.Name())
				}
			}
		})
	}
}

func TestLeaveTearsDownOnlyWhenLast(t *testing.T) {
	dir := t.TempDir()
	a, b := mustRegister(t, dir), mustRegister(t, dir)
	var teardowns atomic.Int32
	td := func() error { teardowns.Add(1); return nil }
	last, err := a.Leave(ctxT(t), td)
	if err != nil || last || teardowns.Load() != 0 {
		t.Fatalf("first Leave: last %v err %v teardowns %d; want not last, no teardown", last, err, teardowns.Load())
	}
	last, err = b.Leave(ctxT(t), td)
	if err != nil || !last || teardowns.Load() != 1 {
		t.Fatalf("second Leave: last %v err %v teardowns %d; want last with one teardown", last, err, teardowns.Load())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != nodeLockName {
		t.Errorf("run dir after both left: %v, want only %s", entries, nodeLockName)
	}
}

// Two instances stopping at the same moment: exactly one tears down.
func TestConcurrentLeave(t *testing.T) {
	for i := range 20 {
		dir := t.TempDir()
		regs := []*Registry{mustRegister(t, dir), mustRegister(t, dir), mustRegister(t, dir)}
		var teardowns atomic.Int32
		var wg sync.WaitGroup
		for _, r := range regs {
			wg.Go(func() {
				if _, err := r.Leave(ctxT(t), func() error { teardowns.Add(1); return nil }); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := teardowns.Load(); n != 1 {
			t.Fatalf("round %d: %d teardowns, want exactly 1", i, n)
		}
	}
}

func TestNodeLockBounded(t *testing.T) {
	dir := t.TempDir()
	a, b := mustRegister(t, dir), mustRegister(t, dir)
	release := make(chan struct{})
	held := make(chan struct{})
	ctxA := ctxT(t)
	go func() { _ = a.WithNodeLock(ctxA, func() error { close(held); <-release; return nil }) }()
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.WithNodeLock(ctx, func() error { return nil })
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("WithNodeLock while held = %v after %v; want a deadline error within the bound", err, time.Since(start))
	}
}

func TestRegisterBadDir(t *testing.T) {
	for _, tc := range []struct{ name, dir string }{
		{name: "empty", dir: ""},
		{name: "under a file", dir: "/dev/null/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Register(tc.dir); err == nil {
				t.Error("Register succeeded, want an error")
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listenUDP opens a UDP socket the way the server does and returns it as a
// file (the form server.Sockets holds).
func listenUDP(t *testing.T) (*net.UDPConn, *os.File) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); f.Close() })
	return c, f
}

// TestLockFilesPrivate: every lock file and the run directory are
// root's alone (0600, 0700), also a node lock left world-readable by an
// older version: a user who can open a lock file can hold its lock.
func TestLockFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, nodeLockName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, nodeLockName), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustRegister(t, dir)
	if err := r.WithNodeLock(ctxT(t), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("run directory: %v, %v; want mode 0700", fi.Mode().Perm(), err)
	}
}
