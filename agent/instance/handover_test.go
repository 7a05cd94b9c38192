package instance

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestHandoverSharesSockets(t *testing.T) {
	dir := t.TempDir()
	old := mustRegister(t, dir)
	oldConn, oldFile := listenUDP(t)
	tcpLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	tcpFile, err := tcpLn.File()
	if err != nil {
		t.Fatal(err)
	}
	udpKey := "udp/" + oldConn.LocalAddr().String()
	tcpKey := "tcp/" + tcpLn.Addr().String()
	var gets, dones atomic.Int32
	if err := old.ServeHandover(func() (map[string]*os.File, func()) {
		gets.Add(1)
		return map[string]*os.File{udpKey: oldFile, tcpKey: tcpFile}, func() { dones.Add(1) }
	}); err != nil {
		t.Fatal(err)
	}

	// An instance with nobody to ask gets nothing, without error.
	lonely := mustRegister(t, t.TempDir())
	if socks, _, err := lonely.FetchSockets(ctxT(t)); err != nil || len(socks) != 0 {
		t.Fatalf("FetchSockets alone = %v, %v; want empty", socks, err)
	}

	newer := mustRegister(t, dir)
	socks, from, err := newer.FetchSockets(ctxT(t))
	if err != nil || from != old.ID() || len(socks) != 2 {
		t.Fatalf("FetchSockets = %v from %q, %v; want 2 sockets from %s", socks, from, err, old.ID())
	}
	for deadline := time.Now().Add(2 * time.Second); gets.Load() == 0 || dones.Load() != gets.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("get called %d times, its done %d times", gets.Load(), dones.Load())
		}
	}
	newConn, err := net.FilePacketConn(socks[udpKey])
	if err != nil {
		t.Fatal(err)
	}
	defer newConn.Close()
	if newConn.LocalAddr().String() != oldConn.LocalAddr().String() {
		t.Fatalf("inherited socket on %s, want %s", newConn.LocalAddr(), oldConn.LocalAddr())
	}
	newLn, err := net.FileListener(socks[tcpKey])
	if err != nil || newLn.Addr().String() != tcpLn.Addr().String() {
		t.Fatalf("inherited listener %v, %v; want %s", newLn, err, tcpLn.Addr())
	}
	newLn.Close()

	// The zero-loss drill in miniature. The old instance's reader is parked
	// waiting for data; it stops reading by a read deadline (which wakes it
	// without taking a packet), queries arrive while nobody reads, the old
	// instance closes its descriptors and goes away, and the new instance
	// still reads every query: the queue belongs to the shared socket, not
	// to a process.
	stopped := make(chan error, 1)
	go func() {
		buf := make([]byte, 512)
		_, _, err := oldConn.ReadFrom(buf)
		stopped <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := oldConn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("old reader stopped with %v, want a deadline error (no packet taken)", err)
	}
	client, err := net.DialUDP("udp", nil, oldConn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const queries = 100
	for i := range queries {
		if _, err := client.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	oldConn.Close()
	oldFile.Close()
	_ = newConn.SetReadDeadline(time.Now().Add(2 * time.Second))
	seen := map[byte]bool{}
	buf := make([]byte, 512)
	for len(seen) < queries {
		n, _, err := newConn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("new instance read %d of %d queries, then %v", len(seen), queries, err)
		}
		if n == 1 {
			seen[buf[0]] = true
		}
	}
	// The departed instance's handover socket is gone with it.
	if others, err := newer.Others(); err != nil || len(others) != 0 {
		t.Errorf("Others after the old one left = %v, %v", others, err)
	}
}

func TestHandoverRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	r := mustRegister(t, dir)
	if err := r.ServeHandover(func() (map[string]*os.File, func()) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unixpacket", dir+"/"+r.ID()+sockSuffix)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GIMME")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err == nil && n > 0 {
		t.Errorf("unknown request answered with %q", buf[:n])
	}
	// A proper request to an instance with no sockets gets an empty set.
	other := mustRegister(t, dir)
	socks, _, err := other.FetchSockets(ctxT(t))
	if err != nil || len(socks) != 0 {
		t.Errorf("FetchSockets from an instance without sockets = %v, %v", socks, err)
	}
}
