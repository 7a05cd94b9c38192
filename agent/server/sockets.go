package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// Sockets are listening sockets keyed "udp/IP:port" or "tcp/IP:port". Extra
// UDP sockets of one address (several readers, one per core) are keyed
// "udp/IP:port#N". The files can be passed to another process (SCM_RIGHTS)
// and given back to OpenSockets there.
type Sockets map[string]*os.File

// UDPSocketsPerAddr is how many SO_REUSEPORT UDP sockets OpenSockets opens
// for each UDP address, so that every core reads queries.
var UDPSocketsPerAddr = runtime.GOMAXPROCS(0)

// Keys returns the socket keys (UDP and TCP) the server blocks of cfg
// listen on: every bind address, or 0.0.0.0 when a block has no bind, at
// the block's port.
func Keys(cfg *corefile.Config) []string {
	seen := map[string]bool{}
	var keys []string
	for _, s := range cfg.Servers {
		for _, addr := range blockAddrs(s.Bind, s.Port) {
			for _, proto := range []string{"udp", "tcp"} {
				k := proto + "/" + addr
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// blockAddrs returns the listen addresses of a block.
func blockAddrs(bind []string, port int) []string {
	if len(bind) == 0 {
		bind = []string{"0.0.0.0"}
	}
	out := make([]string, 0, len(bind))
	for _, ip := range bind {
		out = append(out, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	return out
}

// parseKey splits "udp/IP:port#N" into its protocol and address.
func parseKey(key string) (proto string, addr netip.AddrPort, err error) {
	proto, rest, ok := strings.Cut(key, "/")
	if !ok || (proto != "udp" && proto != "tcp") {
		return "", addr, fmt.Errorf("socket key %q: want udp/IP:port or tcp/IP:port", key)
	}
	rest, _, _ = strings.Cut(rest, "#")
	addr, err = netip.ParseAddrPort(rest)
	if err != nil {
		return "", addr, fmt.Errorf("socket key %q: %w", key, err)
	}
	return proto, addr, nil
}

// baseKey strips the "#N" suffix of an extra UDP socket's key.
func baseKey(key string) string {
	k, _, _ := strings.Cut(key, "#")
	return k
}

// OpenSockets returns a socket for every key, and UDPSocketsPerAddr
// sockets for every UDP key: inherited sockets are reused, missing ones are
// opened with SO_REUSEPORT so that another instance can bind beside this
// one. Inherited sockets that no key asks for are left alone.
func OpenSockets(keys []string, inherited Sockets) (Sockets, error) {
	out := Sockets{}
	for _, key := range keys {
		key = baseKey(key)
		proto, addr, err := parseKey(key)
		if err != nil {
			out.Close()
			return nil, err
		}
		n := 1
		if proto == "udp" {
			n = max(1, UDPSocketsPerAddr)
		}
		for i := 0; i < n; i++ {
			k := key
			if i > 0 {
				k = key + "#" + strconv.Itoa(i)
			}
			if _, ok := out[k]; ok {
				continue
			}
			if f, ok := inherited[k]; ok && f != nil {
				out[k] = f
				continue
			}
			f, err := open(proto, addr, k)
			if err != nil {
				out.Close()
				return nil, err
			}
			out[k] = f
		}
	}
	return out, nil
}

// Close closes every socket.
func (s Sockets) Close() {
	for k, f := range s {
		f.Close()
		delete(s, k)
	}
}

// open opens one listening socket with SO_REUSEPORT.
func open(proto string, addr netip.AddrPort, name string) (*os.File, error) {
	lc := net.ListenConfig{Control: control}
	network := proto + "4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = proto + "6"
	}
	var (
		f   *os.File
		err error
	)
	if proto == "udp" {
		var c net.PacketConn
		c, err = lc.ListenPacket(context.Background(), network, addr.String())
		if err == nil {
			f, err = c.(*net.UDPConn).File()
			c.Close()
		}
	} else {
		var l net.Listener
		l, err = lc.Listen(context.Background(), network, addr.String())
		if err == nil {
			f, err = l.(*net.TCPListener).File()
			l.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", name, err)
	}
	return f, nil
}

// control sets SO_REUSEPORT (and large buffers on UDP sockets) before bind.
func control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEPORT: %w", serr)
			return
		}
		if strings.HasPrefix(network, "udp") {
			const size = 4 << 20
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
