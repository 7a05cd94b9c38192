package server

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
)

// TestRefuseNew: queries sent before RefuseNew (read already or still
// queued on the socket) are all answered; a query sent after it is refused
// by the kernel at once (ICMP port unreachable), not left unanswered; the
// server then shuts down as usual.
func TestRefuseNew(t *testing.T) {
	_, f := upstream(t, zone.Handler())
	s, addr := startWith(t, Options{}, []string{"udp"}, &Block{Zones: []string{"."}, Cache: cache.New(cacheCfg(), cache.Options{}), Forward: f})
	exchange(t, "udp", addr, q("www.example.", dns.TypeA)) // cached from now on

	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	early, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	const burst = 200
	for i := range burst {
		m := q("www.example.", dns.TypeA)
		m.Id = uint16(i)
		b, _ := m.Pack()
		if _, err := early.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.RefuseNew(ctx); err != nil {
		t.Fatalf("RefuseNew: %v", err)
	}

	late, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	b, _ := q("www.example.", dns.TypeA).Pack()
	if _, err := late.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = late.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := late.Read(make([]byte, 512)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a query after RefuseNew: %v, want connection refused", err)
	}

	seen := map[uint16]bool{}
	buf := make([]byte, 512)
	_ = early.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(seen) < burst {
		n, err := early.Read(buf)
		if err != nil {
			t.Fatalf("%d of the %d queries sent before RefuseNew answered: %v", len(seen), burst, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil || len(r.Answer) != 1 {
			t.Fatalf("answer %v, %v", r, err)
		}
		seen[r.Id] = true
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown after RefuseNew: %v", err)
	}
}
