package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// RefuseNew makes the kernel refuse new UDP queries while the ones already
// queued on the sockets are still read and answered: every UDP listening
// socket is connected to a peer that never sends (port 9 of its own
// address), so a datagram from anyone else finds no socket and its client
// gets ICMP port unreachable at once (a resolver moves to its next
// nameserver), while the receive queue stays readable and answers are still
// sent to any address. It then waits (until ctx is done) for the queues to
// be read. Closing instead, or stopping reading, loses the queued queries:
// a glibc client that has its A answer but not its AAAA one then waits out
// a timeout and asks this address once more.
//
// Sockets bound to a wildcard address are left as they are. The sockets
// must not be shared with another live instance (a socket
// hand-over): connecting them would cut that instance off too.
func (s *Server) RefuseNew(ctx context.Context) error {
	s.mu.Lock()
	conns := make([]*net.UDPConn, 0, len(s.udp))
	for _, c := range s.udp {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, c := range conns {
		if c.LocalAddr().(*net.UDPAddr).IP.IsUnspecified() {
			// Connecting would also pick one local address for it.
			continue
		}
		if err := connectAway(c); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range conns {
		for queued(c) {
			select {
			case <-ctx.Done():
				return errors.Join(append(errs, fmt.Errorf("server: queries still queued: %w", ctx.Err()))...)
			case <-time.After(time.Millisecond):
			}
		}
	}
	return errors.Join(errs...)
}

// connectAway connects c to port 9 of its own address.
func connectAway(c *net.UDPConn) error {
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	ip := local.Addr().Unmap()
	var sa unix.Sockaddr
	switch {
	case ip.Is4():
		sa = &unix.SockaddrInet4{Port: 9, Addr: ip.As4()}
	default:
		sa = &unix.SockaddrInet6{Port: 9, Addr: ip.As16()}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("server: refuse new queries on %s: %w", local, cerr)
	}
	return nil
}

// queued reports whether a datagram waits on c (SIOCINQ: the size of the
// next one, 0 when none).
func queued(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}
