// Package netns holds what the tests and the demo do inside the network
// namespaces they create (`ip netns add`), from the Go process itself.
package netns

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// DialTCP opens a TCP connection to addr from inside the named namespace
// (/var/run/netns/<name>). The socket is created on an OS thread switched
// into the namespace, and the thread is switched back before it is unlocked.
// A thread left in the namespace would have to be discarded, and a discarded
// thread delivers the parent-death signal (Pdeathsig) to every child process
// forked from it: NSD or an agent started by the caller would die with it.
func DialTCP(name, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("netns: open own namespace: %w", err)}
			return
		}
		defer home.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("netns: %w", err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("netns: setns %s: %w", name, err)}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // back home: the thread may serve other goroutines
		} // else it stays locked and is discarded with this goroutine
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.c, r.err
}

// RunInFresh runs fn on an OS thread moved into a new, empty network
// namespace; commands started from fn inherit it. The thread stays locked
// and is thrown away by the runtime afterwards (fn must not start processes
// that use Pdeathsig and must outlive it).
func RunInFresh(fn func()) error {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return
		}
		fn()
	}()
	<-done
	if err != nil {
		return fmt.Errorf("netns: unshare network namespace: %w", err)
	}
	return nil
}
