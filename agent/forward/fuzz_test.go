package forward

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzTCPAnswers feeds arbitrary bytes from a "server" into a pipelined
// connection with one query in flight: the reader must not panic or hang,
// and may only deliver an answer that matches the query's ID and question.
func FuzzTCPAnswers(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	good := new(dns.Msg)
	good.SetReply(q)
	wire, _ := good.Pack()
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(wire)))
	f.Add(append(frame, wire...))
	f.Add([]byte{0, 12, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		c := newTCPConn(client)
		defer c.close(errConnClosed)
		id, w, err := c.register(q.Question[0])
		if err != nil {
			t.Fatal(err)
		}
		// Make the fuzzed answers address our query: patch every frame's ID.
		patched := append([]byte(nil), stream...)
		for off := 0; off+4 <= len(patched); {
			n := int(binary.BigEndian.Uint16(patched[off:]))
			binary.BigEndian.PutUint16(patched[off+2:], id)
			off += 2 + n
		}
		go func() {
			_, _ = server.Write(patched)
			server.Close()
		}()
		select {
		case r := <-w.ch:
			if !matches(q.Question[0], id, r) {
				t.Fatalf("delivered a non-matching answer: %v", r)
			}
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("reader neither delivered nor ended")
		}
	})
}
