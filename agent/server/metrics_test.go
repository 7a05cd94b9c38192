package server

import (
	"testing"

	"github.com/miekg/dns"
)

// The type label: each of CoreDNS's monitored types has a slot of its own
// named after it, every other type shares the last slot, "other".
func TestTypeSlots(t *testing.T) {
	// CoreDNS's plugin/metrics/vars monitorType set.
	coredns := []uint16{
		dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeAXFR, dns.TypeCNAME, dns.TypeDNSKEY,
		dns.TypeDS, dns.TypeHTTPS, dns.TypeIXFR, dns.TypeMX, dns.TypeNS, dns.TypeNSEC,
		dns.TypeNSEC3, dns.TypePTR, dns.TypeRRSIG, dns.TypeSOA, dns.TypeSRV, dns.TypeTXT,
	}
	if numTypes != len(coredns)+1 {
		t.Fatalf("numTypes = %d, want %d (CoreDNS's monitored types + other)", numTypes, len(coredns)+1)
	}
	seen := map[int]uint16{}
	for _, qt := range coredns {
		i := typeIndex(qt)
		if i < 0 || i >= numTypes-1 {
			t.Errorf("typeIndex(%s) = %d, want a slot of its own below %d", dns.TypeToString[qt], i, numTypes-1)
			continue
		}
		if prev, dup := seen[i]; dup {
			t.Errorf("typeIndex(%s) = %d, the slot of %s", dns.TypeToString[qt], i, dns.TypeToString[prev])
		}
		seen[i] = qt
		if got := typeName(i); got != dns.TypeToString[qt] {
			t.Errorf("typeName(typeIndex(%s)) = %q", dns.TypeToString[qt], got)
		}
	}
	for _, qt := range []uint16{0, dns.TypeCAA, dns.TypeNAPTR, dns.TypeSVCB, dns.TypeOPT, 65535} {
		if i := typeIndex(qt); i != numTypes-1 || typeName(i) != "other" {
			t.Errorf("type %d: slot %d (%q), want %d (\"other\")", qt, i, typeName(i), numTypes-1)
		}
	}
}
