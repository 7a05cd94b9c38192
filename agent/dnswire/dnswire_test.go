package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/miekg/dns"
)

func query(t *testing.T, name string, qtype uint16, edns bool, size uint16, do bool) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xbeef
	if edns {
		m.SetEdns0(size, do)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseQuery(t *testing.T) {
	ok := query(t, "Www.Example.COM.", dns.TypeAAAA, false, 0, false)
	withOPT := query(t, "example.com.", dns.TypeA, true, 4096, true)
	response := append([]byte(nil), ok...)
	response[2] |= 0x80
	badVersion := append([]byte(nil), withOPT...)
	badVersion[len(badVersion)-5] = 1
	twoQuestions := append([]byte(nil), ok...)
	binary.BigEndian.PutUint16(twoQuestions[4:], 2)
	compressed := append(append([]byte(nil), ok[:12]...), 0xc0, 12, 0, 1, 0, 1)
	longLabel := append(append([]byte(nil), ok[:12]...), 64)
	longLabel = append(longLabel, bytes.Repeat([]byte{'a'}, 64)...)
	longLabel = append(longLabel, 0, 0, 1, 0, 1)
	longName := append([]byte(nil), ok[:12]...)
	for range 5 {
		longName = append(longName, 63)
		longName = append(longName, bytes.Repeat([]byte{'a'}, 63)...)
	}
	longName = append(longName, 0, 0, 1, 0, 1)
	notify := append([]byte(nil), ok...)
	notify[2] |= 4 << 3

	for _, tc := range []struct {
		name    string
		pkt     []byte
		wantErr error
		check   func(t *testing.T, q *Query)
	}{
		{name: "plain", pkt: ok, check: func(t *testing.T, q *Query) {
			if q.ID != 0xbeef || q.QType != dns.TypeAAAA || q.QClass != dns.ClassINET || q.EDNS {
				t.Errorf("got %+v", q)
			}
			if q.QEnd != len(ok) || q.MaxUDPSize() != 512 {
				t.Errorf("QEnd %d (len %d), max %d", q.QEnd, len(ok), q.MaxUDPSize())
			}
		}},
		{name: "edns", pkt: withOPT, check: func(t *testing.T, q *Query) {
			if !q.EDNS || !q.DO || q.UDPSize != 4096 || q.MaxUDPSize() != 4096 {
				t.Errorf("got %+v", q)
			}
		}},
		{name: "empty", pkt: nil, wantErr: ErrShort},
		{name: "header only", pkt: ok[:12], wantErr: ErrShort},
		{name: "truncated question", pkt: ok[:len(ok)-2], wantErr: ErrShort},
		{name: "truncated opt", pkt: withOPT[:len(withOPT)-3], wantErr: ErrShort},
		{name: "trailing", pkt: append(append([]byte(nil), ok...), 0), wantErr: ErrTrailing},
		{name: "response", pkt: response, wantErr: ErrNotQuery},
		{name: "edns version 1", pkt: badVersion, wantErr: ErrNotSimple},
		{name: "two questions", pkt: twoQuestions, wantErr: ErrNotSimple},
		{name: "compressed question", pkt: compressed, wantErr: ErrNotSimple},
		{name: "label over 63", pkt: longLabel, wantErr: ErrNotSimple},
		{name: "name over 255", pkt: longName, wantErr: ErrName},
		{name: "notify opcode", pkt: notify, wantErr: ErrNotSimple},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q Query
			err := ParseQuery(tc.pkt, &q)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, &q)
			}
		})
	}
}

func TestAppendKey(t *testing.T) {
	key := func(name string, qtype uint16, do, cd bool) string {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.CheckingDisabled = cd
		if do {
			m.SetEdns0(1232, true)
		}
		b, _ := m.Pack()
		var q Query
		if err := ParseQuery(b, &q); err != nil {
			t.Fatal(err)
		}
		return string(AppendKey(nil, b, &q))
	}
	base := key("example.com.", dns.TypeA, false, false)
	for _, tc := range []struct {
		name string
		key  string
		same bool
	}{
		{"case insensitive", key("EXAMPLE.com.", dns.TypeA, false, false), true},
		{"other type", key("example.com.", dns.TypeAAAA, false, false), false},
		{"do bit", key("example.com.", dns.TypeA, true, false), false},
		{"cd bit", key("example.com.", dns.TypeA, false, true), false},
		{"other name", key("example.org.", dns.TypeA, false, false), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.key == base) != tc.same {
				t.Errorf("key %q vs %q: same=%v, want %v", tc.key, base, tc.key == base, tc.same)
			}
		})
	}
	if got := string(KeyName([]byte(base))); got != "\x07example\x03com\x00" {
		t.Errorf("KeyName = %q", got)
	}
}

func TestWalk(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	m.Response = true
	for _, s := range []string{"example.com. 300 IN A 192.0.2.1", "example.com. 200 IN A 192.0.2.2"} {
		rr, _ := dns.NewRR(s)
		m.Answer = append(m.Answer, rr)
	}
	soa, _ := dns.NewRR("com. 900 IN SOA a. b. 1 2 3 4 5")
	m.Ns = append(m.Ns, soa)
	m.SetEdns0(1232, false)
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	lay, err := Walk(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(lay.TTLOffsets) != 3 || lay.OPTStart < 0 {
		t.Fatalf("layout %+v", lay)
	}
	SetTTLs(b, lay.TTLOffsets, 7)
	var out dns.Msg
	if err := out.Unpack(b); err != nil {
		t.Fatal(err)
	}
	for _, rr := range append(out.Answer, out.Ns...) {
		if rr.Header().Ttl != 7 {
			t.Errorf("ttl of %s = %d", rr, rr.Header().Ttl)
		}
	}
	if opt := out.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
		t.Errorf("OPT damaged: %v", opt)
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"short", b[:len(b)-1]},
		{"trailing", append(append([]byte(nil), b...), 1)},
		{"header", b[:5]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Walk(tc.pkt); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestParseQueryNoAlloc(t *testing.T) {
	pkt := query(t, "www.example.com.", dns.TypeA, true, 1232, false)
	var q Query
	buf := make([]byte, 0, MaxKeyLen)
	allocs := testing.AllocsPerRun(100, func() {
		_ = ParseQuery(pkt, &q)
		buf = AppendKey(buf[:0], pkt, &q)
	})
	if allocs != 0 {
		t.Errorf("allocs = %v", allocs)
	}
}

func FuzzParseQuery(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.SetEdns0(4096, true)
	b, _ := m.Pack()
	f.Add(b)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var q Query
		if err := ParseQuery(pkt, &q); err == nil {
			if q.QEnd > len(pkt) || q.NameEnd > q.QEnd {
				t.Fatalf("offsets out of range: %+v", q)
			}
			_ = AppendKey(nil, pkt, &q)
		}
		if lay, err := Walk(pkt); err == nil {
			SetTTLs(pkt, lay.TTLOffsets, 1)
		}
	})
}
