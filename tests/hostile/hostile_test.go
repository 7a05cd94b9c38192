// Package hostile attacks the agent the way one pod on a node could
// (issue 10), as root in a network namespace of the test's own, and checks
// that the agent holds: peak RSS within its 64Mi limit, another client's
// cache hits, misses and the liveness probe still answered, and the memory
// given back afterwards. Every attack is bounded in count and in time.
package hostile

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestHostile runs every attack against one agent, one after the other.
func TestHostile(t *testing.T) {
	e := setup(t)

	// 100 TCP connections x 64 pipelined queries to an upstream that never
	// answers: TCP queries bypassed the miss path's limit (RSS 291 MB).
	t.Run("tcp pipelined misses to a dead upstream", func(t *testing.T) {
		attack(t, e, 3*time.Second, func(ctx context.Context) {
			tcpPipeline(ctx, attacker(1), 100, 64, func(i int) string { return fmt.Sprintf("p%d.hole.example.", i) }, dns.TypeA)
		})
		// The client's limit (512) or the budget's share (past half of
		// 16 MiB, i.e. about 512 misses) binds, whichever comes first.
		if refused(t, e, "client_inflight")+refused(t, e, "memory_heavy") == 0 {
			t.Error("no query counted in nodelocaldns_server_refused_total{reason=\"client_inflight\" or \"memory_heavy\"}")
		}
	})

	// The same from 16 addresses (a pod can have several, or several pods
	// collude): the per-client limits no longer bind, the memory budget
	// and the miss path's slots do.
	t.Run("tcp pipelined misses from many addresses", func(t *testing.T) {
		before := refused(t, e, "memory") + refused(t, e, "memory_heavy") + refused(t, e, "inflight")
		attack(t, e, 3*time.Second, func(ctx context.Context) {
			var wg sync.WaitGroup
			for a := range 16 {
				wg.Go(func() {
					tcpPipeline(ctx, attacker(100+a), 8, 64, func(i int) string { return fmt.Sprintf("m%d-%d.hole.example.", a, i) }, dns.TypeA)
				})
			}
			wg.Wait()
		})
		if after := refused(t, e, "memory") + refused(t, e, "memory_heavy") + refused(t, e, "inflight"); after <= before {
			t.Error("no query refused by the memory budget or the miss path's slots")
		}
	})

	// 3,000 unique names with 56 kB answers over TCP: the cache was bounded
	// in entries only (RSS 214 MB).
	t.Run("large answers over TCP", func(t *testing.T) {
		var answered atomic.Int64
		attack(t, e, 8*time.Second, func(ctx context.Context) {
			var seq atomic.Int64
			tcpPipeline(ctx, attacker(2), 16, 4, func(int) string {
				n := seq.Add(1)
				if n > 3000 {
					return ""
				}
				return fmt.Sprintf("b%d.big.test.", n)
			}, dns.TypeTXT, &answered)
		})
		t.Logf("%d large answers received by the attacker", answered.Load())
		if answered.Load() < 100 {
			t.Errorf("only %d large answers: the attack did not happen", answered.Load())
		}
	})

	// 1,200 idle TCP connections from one client (one byte every 2 s):
	// with a per-listener limit only, every other client's TCP queries
	// failed. Now each is answered within 2 s.
	t.Run("idle TCP connections", func(t *testing.T) {
		before := refused(t, e, "client_conns")
		var slow []string
		attack(t, e, 6*time.Second, func(ctx context.Context) {
			conns := holdIdle(ctx, attacker(3), 1200)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			slow = victimTCP(ctx, 2*time.Second)
		})
		for _, s := range slow {
			t.Error(s)
		}
		if refused(t, e, "client_conns") <= before {
			t.Error("no connection counted in nodelocaldns_server_refused_total{reason=\"client_conns\"}")
		}
	})

	// 300 connections to the health port from one pod, each sending a
	// request header a byte at a time: the kubelet's probes still pass.
	t.Run("connections to the health port", func(t *testing.T) {
		attack(t, e, 3*time.Second, func(ctx context.Context) {
			var conns []net.Conn
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker(8))}, Timeout: time.Second}
			for range 300 {
				if c, err := d.DialContext(ctx, "tcp", e.agent.Health); err == nil {
					conns = append(conns, c)
				}
			}
			for ctx.Err() == nil {
				for _, c := range conns {
					_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
					_, _ = c.Write([]byte("G"))
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
			for _, c := range conns {
				c.Close()
			}
		})
	})

	// ~3,000 unique misses/s to an upstream that never answers: /health
	// failed (its self-query took a miss slot) and other clients' misses
	// were dropped.
	t.Run("UDP misses to a dead upstream", func(t *testing.T) {
		attack(t, e, 4*time.Second, func(ctx context.Context) {
			udpFlood(ctx, attacker(4), 3000, 12000, func(i int) []byte {
				return packQuery(fmt.Sprintf("u%d.hole.example.", i), dns.TypeA)
			}, nil)
		})
	})

	// A flood of unique names answered by the healthy upstream.
	t.Run("UDP flood of unique names", func(t *testing.T) {
		attack(t, e, 3*time.Second, func(ctx context.Context) {
			udpFlood(ctx, attacker(5), 10000, 30000, func(i int) []byte {
				return packQuery(fmt.Sprintf("f%d-%d.default.svc.cluster.local.", i, rand.N(1<<30)), dns.TypeA)
			}, nil)
		})
	})

	// Garbage: random bytes, headers without bodies, responses, malformed
	// EDNS, compression loops, and queries asking for 65535-byte UDP
	// answers of 56 kB names (no reply may be longer than 4096 bytes).
	t.Run("garbage packets", func(t *testing.T) {
		var largest atomic.Int64
		attack(t, e, 3*time.Second, func(ctx context.Context) {
			udpFlood(ctx, attacker(6), 8000, 24000, garbage, func(n int) {
				for {
					l := largest.Load()
					if int64(n) <= l || largest.CompareAndSwap(l, int64(n)) {
						return
					}
				}
			})
		})
		t.Logf("largest reply to the garbage: %d bytes", largest.Load())
		if largest.Load() > 4096 {
			t.Errorf("a UDP reply of %d bytes, want <= 4096", largest.Load())
		}
	})
}

// TestAnswers checks the protocol fixes of issue 10 on a real agent.
func TestAnswers(t *testing.T) {
	e := setup(t)
	_ = e

	// An answer to an RD=0 query was cached and served to RD=1 clients.
	t.Run("RD in the cache key", func(t *testing.T) {
		q := new(dns.Msg)
		q.SetQuestion("rd.default.svc.cluster.local.", dns.TypeA)
		q.RecursionDesired = false
		buf, _ := q.Pack()
		r, _, err := exchangeUDP(victimIP, buf, 2*time.Second)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("RD=0 query: %v %v", r, err)
		}
		for range 2 { // the second one is a cache hit
			r := udpQuery(victimIP, "rd.default.svc.cluster.local.", dns.TypeA, 2*time.Second)
			if r == nil || len(r.Answer) != 1 {
				t.Fatalf("RD=1 query: %v", r)
			}
			if got := r.Answer[0].(*dns.A).A.String(); got != "10.0.0.1" {
				t.Fatalf("RD=1 query answered %s (the RD=0 answer), want 10.0.0.1", got)
			}
		}
	})

	// A 47-byte query asking for 65535 bytes got a 56 kB reply over UDP.
	t.Run("UDP replies capped at 4096", func(t *testing.T) {
		for i := range 2 { // a miss, then the same name again
			q := new(dns.Msg)
			q.SetQuestion("amp.big.test.", dns.TypeTXT)
			q.SetEdns0(65535, false)
			buf, _ := q.Pack()
			r, n, err := exchangeUDP(attacker(7), buf, 5*time.Second)
			if err != nil {
				t.Fatalf("query %d: %v", i, err)
			}
			t.Logf("query of %d bytes, reply of %d bytes, TC %v", len(buf), n, r.Truncated)
			if n > 4096 || !r.Truncated {
				t.Fatalf("reply of %d bytes (TC %v) to a query for a 56 kB answer, want <= 4096 bytes with TC", n, r.Truncated)
			}
		}
	})

	// Two OPT records, or an OPT owned by another name than the root, are
	// malformed EDNS (RFC 6891 6.1.1).
	t.Run("FORMERR for malformed EDNS", func(t *testing.T) {
		for name, mod := range map[string]func(m *dns.Msg){
			"two OPT records": func(m *dns.Msg) {
				m.SetEdns0(1232, false)
				m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
			},
			"OPT owner not the root": func(m *dns.Msg) {
				m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeOPT, Class: 1232}})
			},
		} {
			q := new(dns.Msg)
			q.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
			mod(q)
			buf, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			r, _, err := exchangeUDP(victimIP, buf, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.Rcode != dns.RcodeFormatError {
				t.Errorf("%s: rcode %s, want FORMERR", name, dns.RcodeToString[r.Rcode])
			}
		}
	})
}

func packQuery(name string, qtype uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	b, _ := m.Pack()
	return b
}

// tcpPipeline opens conns connections from src and keeps up to depth
// queries in flight on each until ctx is done (or name returns ""),
// counting the answers in answered[0] when given.
func tcpPipeline(ctx context.Context, src string, conns, depth int, name func(i int) string, qtype uint16, answered ...*atomic.Int64) {
	var wg sync.WaitGroup
	var seq atomic.Int64
	for range conns {
		c, err := dialTCP(src)
		if err != nil {
			continue
		}
		wg.Add(2)
		credit := make(chan struct{}, depth)
		for range depth {
			credit <- struct{}{}
		}
		go func() { // reader
			defer wg.Done()
			for {
				if _, err := readTCP(c); err != nil {
					return
				}
				if len(answered) > 0 {
					answered[0].Add(1)
				}
				select {
				case credit <- struct{}{}:
				default:
				}
			}
		}()
		go func() { // writer
			defer wg.Done()
			defer c.Close()
			for range 20000 {
				select {
				case <-ctx.Done():
					return
				case <-credit:
				case <-time.After(500 * time.Millisecond): // answers lost: send anyway
				}
				n := name(int(seq.Add(1)))
				if n == "" {
					<-ctx.Done()
					return
				}
				m := new(dns.Msg)
				m.SetQuestion(n, qtype)
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if writeTCP(c, m) != nil {
					return
				}
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
}

// holdIdle opens n connections from src and sends one byte of a length
// prefix on each every 2 s, never a whole query, until ctx is done.
func holdIdle(ctx context.Context, src string, n int) []net.Conn {
	var conns []net.Conn
	for range n {
		if ctx.Err() != nil {
			break
		}
		c, err := dialTCP(src)
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, c := range conns {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				_, _ = c.Write([]byte{0})
			}
		}
	}()
	return conns
}

// victimTCP sends the victim's TCP queries, each on a new connection,
// until ctx is done; it returns a description of each not answered
// within d.
func victimTCP(ctx context.Context, d time.Duration) []string {
	var bad []string
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		err := func() error {
			c, err := dialTCP(victimIP)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(start.Add(d))
			m := new(dns.Msg)
			m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
			if err := writeTCP(c, m); err != nil {
				return err
			}
			r, err := readTCP(c)
			if err != nil {
				return err
			}
			if len(r.Answer) != 1 {
				return fmt.Errorf("answer %v", r)
			}
			return nil
		}()
		if err != nil {
			bad = append(bad, fmt.Sprintf("victim TCP query %d: not answered within %s: %v", i, d, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return bad
}

// udpFlood sends about rate packets/s from src, at most total, until ctx
// is done, and reads (and drops) the replies, passing their sizes to
// onReply when given.
func udpFlood(ctx context.Context, src string, rate, total int, pkt func(i int) []byte, onReply func(n int)) {
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(localIP), Port: 53})
	if err != nil {
		return
	}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if onReply != nil {
				onReply(n)
			}
		}
	}()
	const tick = 5 * time.Millisecond
	perTick := max(1, rate*int(tick)/int(time.Second))
	t := time.NewTicker(tick)
	defer t.Stop()
	sent := 0
	for sent < total {
		select {
		case <-ctx.Done():
			sent = total
			continue
		case <-t.C:
		}
		for range perTick {
			_, _ = c.Write(pkt(sent))
			sent++
		}
	}
	<-ctx.Done()
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	<-done
}

// garbage returns the i-th malformed or hostile packet.
func garbage(i int) []byte {
	switch i % 10 {
	case 0: // random bytes
		b := make([]byte, rand.N(600))
		for j := range b {
			b[j] = byte(rand.N(256))
		}
		return b
	case 1: // a header only, claiming records
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b, uint16(i))
		binary.BigEndian.PutUint16(b[4:], 1)
		binary.BigEndian.PutUint16(b[10:], 3)
		return b
	case 2: // a response
		m := new(dns.Msg)
		m.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		m.Response = true
		b, _ := m.Pack()
		return b
	case 3: // two OPT records
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("g%d.default.svc.cluster.local.", i), dns.TypeA)
		m.SetEdns0(4096, true)
		m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 512}})
		b, _ := m.Pack()
		return b
	case 4: // OPT owned by another name
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("g%d.default.svc.cluster.local.", i), dns.TypeA)
		m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: "evil.", Rrtype: dns.TypeOPT, Class: 4096}})
		b, _ := m.Pack()
		return b
	case 5: // a compression pointer loop in the question
		b := make([]byte, 12, 18)
		binary.BigEndian.PutUint16(b, uint16(i))
		binary.BigEndian.PutUint16(b[4:], 1)
		return append(b, 0xc0, 12, 0, 1, 0, 1)
	case 6: // an amplification attempt: 65535-byte buffer, 56 kB answer
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("amp%d.big.test.", i%50), dns.TypeTXT)
		m.SetEdns0(65535, false)
		b, _ := m.Pack()
		return b
	case 7: // many questions
		m := new(dns.Msg)
		for j := range 20 {
			m.Question = append(m.Question, dns.Question{Name: fmt.Sprintf("q%d.example.", j), Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}
		b, _ := m.Pack()
		return b
	case 8: // an unknown opcode and class
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("g%d.example.", i), dns.TypeA)
		m.Opcode = 9
		m.Question[0].Qclass = 254
		b, _ := m.Pack()
		return b
	default: // truncated query
		b := packQuery(fmt.Sprintf("t%d.default.svc.cluster.local.", i), dns.TypeA)
		return b[:rand.N(len(b))]
	}
}
