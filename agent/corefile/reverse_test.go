package corefile

import (
	"reflect"
	"strings"
	"testing"
)

func TestReverseZones(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		want []string
	}{
		{"10.0.0.0/8", []string{"10.in-addr.arpa."}},
		{"10.1.2.3/8", []string{"10.in-addr.arpa."}},
		{"192.168.0.0/16", []string{"168.192.in-addr.arpa."}},
		{"172.16.0.0/12", []string{"16.172.in-addr.arpa.", "17.172.in-addr.arpa.", "18.172.in-addr.arpa.", "19.172.in-addr.arpa.",
			"20.172.in-addr.arpa.", "21.172.in-addr.arpa.", "22.172.in-addr.arpa.", "23.172.in-addr.arpa.", "24.172.in-addr.arpa.",
			"25.172.in-addr.arpa.", "26.172.in-addr.arpa.", "27.172.in-addr.arpa.", "28.172.in-addr.arpa.", "29.172.in-addr.arpa.",
			"30.172.in-addr.arpa.", "31.172.in-addr.arpa."}},
		{"10.0.0.0/15", []string{"0.10.in-addr.arpa.", "1.10.in-addr.arpa."}},
		{"10.0.254.0/23", []string{"254.0.10.in-addr.arpa.", "255.0.10.in-addr.arpa."}},
		{"10.0.0.0/32", []string{"0.0.0.10.in-addr.arpa."}},
		{"0.0.0.0/0", []string{"in-addr.arpa."}},
		{"fd00::/8", []string{"d.f.ip6.arpa."}},
		{"2001:db8::/32", []string{"8.b.d.0.1.0.0.2.ip6.arpa."}},
		{"2001:db8::/31", []string{"8.b.d.0.1.0.0.2.ip6.arpa.", "9.b.d.0.1.0.0.2.ip6.arpa."}},
		{"fd00::/6", []string{"c.f.ip6.arpa.", "d.f.ip6.arpa.", "e.f.ip6.arpa.", "f.f.ip6.arpa."}},
	} {
		got, err := reverseZones(tc.cidr)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("reverseZones(%s) = %v, %v; want %v", tc.cidr, got, err, tc.want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0/8", "fe80::1%eth0/64", "::/129"} {
		if got, err := reverseZones(bad); err == nil {
			t.Errorf("reverseZones(%s) = %v, want an error", bad, got)
		}
	}
}

func TestParseReverseCIDR(t *testing.T) {
	cfg, err := Parse("10.0.0.0/15:5353 fd00::/8:5353 {\ncache 30 172.16.0.0/16\nforward 10.0.0.0/15 192.0.2.1 {\nexcept 10.1.0.0/16\n}\n}\n", testOpts())
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Servers[0]
	eq(t, s.Zones, []string{"0.10.in-addr.arpa.", "1.10.in-addr.arpa.", "d.f.ip6.arpa."})
	eq(t, s.Port, 5353)
	eq(t, s.Cache.Zones, []string{"16.172.in-addr.arpa."})
	eq(t, s.Forward.From, "0.10.in-addr.arpa.") // CoreDNS forwards the first zone only
	eq(t, s.Forward.Except, []string{"1.10.in-addr.arpa."})
	if _, err := Parse("fd00::/8:53 {\n}\n", testOpts()); err != nil {
		t.Errorf("IPv6 CIDR with a port: %v", err)
	}
}

// FuzzReverseZones checks that no CIDR makes reverseZones panic, and that
// what it returns are reverse zones, at most 128 of them.
func FuzzReverseZones(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.0/15", "fd00::/6", "0.0.0.0/0", "::/0", "1.2.3.4/32", "::1/128", "10.0.0.0/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		zones, err := reverseZones(s)
		if err != nil {
			return
		}
		if len(zones) == 0 || len(zones) > 128 {
			t.Fatalf("%s: %d zones", s, len(zones))
		}
		for _, z := range zones {
			if !strings.HasSuffix(z, "in-addr.arpa.") && !strings.HasSuffix(z, "ip6.arpa.") {
				t.Fatalf("%s: %q is not a reverse zone", s, z)
			}
			if _, err := normalizeZone(z); err != nil {
				t.Fatalf("%s: %q: %v", s, z, err)
			}
		}
	})
}
