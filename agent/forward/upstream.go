package forward

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// errTimeout reports that an upstream did not answer in time.
var errTimeout = errors.New("timeout waiting for a matching answer")

// upstream is one forwarding destination with its TCP pool and health state.
type upstream struct {
	addr     string
	udp      *udpPool
	tcp      *tcpPool
	forceTCP bool // also set for DNS over TLS: every query goes to tcp
	maxFails uint32
	// hcDomain and hcRD are the health probe's name and RD bit.
	hcDomain string
	hcRD     bool

	fails    atomic.Uint32
	checking atomic.Bool

	requests   prometheus.Counter
	hcFailures prometheus.Counter
}

func newUpstream(addr string, cfg *forwardConfig, m *metrics, tlsConfig *tls.Config) (*upstream, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("forward: upstream %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("forward: upstream %q: not an IP address", addr)
	}
	udpAddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("forward: upstream %q: %w", addr, err)
	}
	u := &upstream{
		addr:       addr,
		udp:        newUDPPool(udpAddr, cfg.expire, cfg.maxIdleConns),
		tcp:        newTCPPool(addr, cfg.expire, tlsConfig, cfg.maxIdleConns),
		forceTCP:   cfg.forceTCP || tlsConfig != nil,
		maxFails:   uint32(max(cfg.maxFails, 0)),
		hcDomain:   cfg.hcDomain,
		hcRD:       !cfg.hcNoRec,
		requests:   m.requests.WithLabelValues(addr),
		hcFailures: m.healthcheckFailures.WithLabelValues(proxyName, addr),
	}
	u.udp.cache = m.connCache(addr, "udp")
	u.tcp.cache = m.connCache(addr, "tcp")
	return u, nil
}

// down reports whether max_fails consecutive health checks failed.
func (u *upstream) down() bool {
	return u.maxFails > 0 && u.fails.Load() >= u.maxFails
}

// exchange sends q (whose ID is replaced by a random one) and returns the
// matching answer. Without force_tcp it uses a fresh UDP socket (random
// source port) and retries over TCP when the answer is truncated.
func (u *upstream) exchange(ctx context.Context, q *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	if u.forceTCP {
		return u.tcp.exchange(ctx, q, deadline)
	}
	r, err := u.exchangeUDP(ctx, q, deadline)
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		return u.tcp.exchange(ctx, q, deadline)
	}
	return r, nil
}

// udpReadSize is the receive buffer of a UDP exchange: above the EDNS0 size
// we advertise (1232), far below 64 KiB, so a thousand misses in flight do
// not pin 64 MiB. A datagram that fills it may have been cut and is taken
// as truncated: the query is repeated over TCP.
const udpReadSize = 4096

var udpBufs = sync.Pool{New: func() any { b := make([]byte, udpReadSize); return &b }}

// exchangeUDP sends q from a pooled connected socket (a random source port
// chosen by the kernel when it was opened) with a fresh random ID, and reads
// until an answer with the query's ID and question arrives or the deadline
// passes. Anything else is dropped. The socket goes back to the pool only
// after a clean exchange.
func (u *upstream) exchangeUDP(ctx context.Context, q *dns.Msg, deadline time.Time) (r *dns.Msg, err error) {
	conn, err := u.udp.get()
	if err != nil {
		return nil, err
	}
	// No context watcher: the deadline already includes the caller's, and
	// registering one per query costs more than the rare cancellation saves.
	defer func() {
		if err == nil {
			u.udp.put(conn)
		} else {
			conn.Close()
		}
	}()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("udp %s: %w", u.addr, err)
	}
	// q belongs to this exchange alone: set a fresh random ID in place.
	q.Id = uint16(rand.N(1 << 16))
	wire, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if _, err := conn.Write(wire); err != nil {
		return nil, fmt.Errorf("udp %s: write: %w", u.addr, err)
	}
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("udp %s: %w", u.addr, errTimeout)
			}
			return nil, fmt.Errorf("udp %s: read: %w", u.addr, err)
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != q.Id {
			continue
		}
		m := new(dns.Msg)
		if n == len(buf) && isResponse(buf) {
			// Larger than the buffer (the upstream ignored our EDNS0 size):
			// ask again over TCP.
			m.SetReply(q)
			m.Truncated = true
			return m, nil
		}
		if err := m.Unpack(buf[:n]); err != nil {
			if truncatedHeader(buf[:n]) {
				// A truncated answer that does not even unpack: go to TCP.
				m.SetReply(q)
				m.Truncated = true
				return m, nil
			}
			continue
		}
		if matches(q.Question[0], q.Id, m) {
			return m, nil
		}
		if m.Response && m.Truncated && len(m.Question) == 0 {
			// A truncated answer without its question section: our ID,
			// nothing to cache, so ask again over TCP.
			m.SetReply(q)
			m.Truncated = true
			return m, nil
		}
	}
}

// isResponse reports whether a raw message has the QR bit.
func isResponse(b []byte) bool { return b[2]&0x80 != 0 }

// truncatedHeader reports whether a raw message is a response with TC set.
func truncatedHeader(b []byte) bool {
	const qr, tc = 1 << 15, 1 << 9
	flags := binary.BigEndian.Uint16(b[2:])
	return flags&qr != 0 && flags&tc != 0
}

// matches reports whether r answers question q sent with ID id: QR set,
// same ID, exactly the same question (name compared case-insensitively).
func matches(q dns.Question, id uint16, r *dns.Msg) bool {
	if !r.Response || r.Id != id || r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		return false
	}
	rq := r.Question[0]
	return rq.Qtype == q.Qtype && rq.Qclass == q.Qclass && strings.EqualFold(rq.Name, q.Name)
}

// check sends the health probe (`. IN NS`, or health_check's domain and
// no_rec); any answer means healthy.
func (u *upstream) check(timeout time.Duration) error {
	q := new(dns.Msg)
	q.SetQuestion(cmp.Or(u.hcDomain, "."), dns.TypeNS)
	q.RecursionDesired = u.hcRD
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var err error
	if u.forceTCP {
		_, err = u.tcp.exchange(ctx, q, deadline)
	} else {
		_, err = u.exchangeUDP(ctx, q, deadline)
	}
	return err
}

// startHealthCheck probes the upstream every interval until it answers,
// counting failures; after maxFails failures it is down. With max_fails 0
// upstreams are never checked nor marked down (as CoreDNS).
func (u *upstream) startHealthCheck(interval, timeout time.Duration, stop <-chan struct{}, spawn func(func()) bool) {
	if u.maxFails == 0 || !u.checking.CompareAndSwap(false, true) {
		return
	}
	started := spawn(func() {
		defer u.checking.Store(false)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			if err := u.check(timeout); err == nil {
				u.fails.Store(0)
				return
			}
			u.hcFailures.Inc()
			u.fails.Add(1)
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	})
	if !started {
		u.checking.Store(false)
	}
}
