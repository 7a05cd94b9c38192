package cache

import (
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDisable(t *testing.T) {
	const soa = "example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 60"
	pos := func(name string) *dns.Msg { return answer(name, dns.RcodeSuccess, name+" 60 IN A 192.0.2.1") }
	nx := func(name string) *dns.Msg { return answer(name, dns.RcodeNameError, soa) }
	sf := func(name string) *dns.Msg { return answer(name, dns.RcodeServerFailure) }
	for _, tc := range []struct {
		name            string
		success, denial []string
		msg             *dns.Msg
		wantCached      bool
	}{
		{"nothing disabled", nil, nil, pos("a.example.org."), true},
		{"success disabled everywhere", []string{"."}, nil, pos("a.example.org."), false},
		{"success disabled: denial still cached", []string{"."}, nil, nx("a.example.org."), true},
		{"success disabled in the zone", []string{"example.org."}, nil, pos("A.Example.ORG."), false},
		{"success disabled in another zone", []string{"example.com."}, nil, pos("a.example.org."), true},
		{"denial disabled", nil, []string{"example.org."}, nx("a.example.org."), false},
		{"denial disabled covers SERVFAIL", nil, []string{"."}, sf("a.example.org."), false},
		{"denial disabled: success cached", nil, []string{"."}, pos("a.example.org."), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			cfg.DisableSuccess, cfg.DisableDenial = tc.success, tc.denial
			c := New(cfg, Options{})
			err := c.Set(keyOf(t, tc.msg.Question[0].Name, dns.TypeA), tc.msg)
			if tc.wantCached && err != nil || !tc.wantCached && !errors.Is(err, ErrNotCacheable) {
				t.Fatalf("Set: %v, want cached: %v", err, tc.wantCached)
			}
			succ, den := c.Len()
			if (succ+den == 1) != tc.wantCached {
				t.Fatalf("%d success and %d denial entries, want cached: %v", succ, den, tc.wantCached)
			}
		})
	}
}

func TestReplyTTL(t *testing.T) {
	for _, keep := range []bool{false, true} {
		clk := newClock()
		cfg := defaults()
		cfg.KeepTTL = keep
		c := New(cfg, Options{Now: clk.now})
		key := keyOf(t, "a.example.org.", dns.TypeA)
		if err := c.Set(key, answer("a.example.org.", dns.RcodeSuccess, "a.example.org. 60 IN A 192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		clk.add(15 * time.Second)
		e, ttl, fresh := c.Get(key, c.Now())
		if !fresh || ttl != 45 {
			t.Fatalf("Get: fresh %v ttl %d, want fresh with 45 left (keepttl does not keep entries longer)", fresh, ttl)
		}
		want := uint32(45)
		if keep {
			want = 60
		}
		if got := c.ReplyTTL(e, ttl); got != want {
			t.Errorf("keepttl %v: reply TTL %d, want %d", keep, got, want)
		}
		clk.add(50 * time.Second)
		if e, _, _ := c.Get(key, c.Now()); e != nil {
			t.Errorf("keepttl %v: entry served after its TTL", keep)
		}
	}
}

func TestServfailTTL(t *testing.T) {
	for _, tc := range []struct {
		ttl    time.Duration
		cached bool
	}{{5 * time.Second, true}, {time.Minute, true}, {0, false}} {
		clk := newClock()
		cfg := defaults()
		cfg.ServfailTTL = tc.ttl
		cfg.DenialTTL = 5 * time.Second // the servfail TTL is not capped by denial's (as CoreDNS)
		c := New(cfg, Options{Now: clk.now})
		key := keyOf(t, "a.example.", dns.TypeA)
		err := c.Set(key, answer("a.example.", dns.RcodeServerFailure))
		if tc.cached != (err == nil) {
			t.Fatalf("servfail %v: Set %v, want cached %v", tc.ttl, err, tc.cached)
		}
		if !tc.cached {
			continue
		}
		clk.add(tc.ttl - time.Second)
		if _, _, fresh := c.Get(key, c.Now()); !fresh {
			t.Errorf("servfail %v: expired before its TTL", tc.ttl)
		}
		clk.add(2 * time.Second)
		if _, _, fresh := c.Get(key, c.Now()); fresh {
			t.Errorf("servfail %v: still fresh after its TTL", tc.ttl)
		}
	}
}
