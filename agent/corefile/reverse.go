package corefile

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// reverseZones expands a CIDR (10.0.0.0/8, fd00::/12) into the reverse
// zones it covers, as CoreDNS does: the mask is rounded up to a label
// boundary (8 bits for IPv4, 4 for IPv6) and each subnet of that size is
// one zone (10.0.0.0/15 -> 0.10.in-addr.arpa., 1.10.in-addr.arpa.).
func reverseZones(cidr string) ([]string, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Addr().Zone() != "" || strings.HasPrefix(cidr, ":") {
		return nil, fmt.Errorf("%q is not a valid CIDR", cidr)
	}
	p = p.Masked()
	unit, suffix := 8, "in-addr.arpa."
	if p.Addr().Is6() {
		unit, suffix = 4, "ip6.arpa."
	}
	bits := p.Bits()
	rounded := (bits + unit - 1) / unit * unit
	n := 1 << (rounded - bits) // at most 2^(unit-1) = 128 subnets
	out := make([]string, 0, n)
	base := p.Addr().AsSlice()
	for i := range n {
		addr := addSubnet(base, i, rounded)
		out = append(out, reverseName(addr, rounded/unit, unit)+suffix)
	}
	return out, nil
}

// addSubnet returns base plus i subnets of prefix length bits.
func addSubnet(base []byte, i, bits int) []byte {
	a := append([]byte(nil), base...)
	// i counts in units of 2^(len*8-bits): add it at bit position bits-1.
	carry := i
	for pos := bits - 1; carry > 0 && pos >= 0; pos-- {
		byteIdx, bit := pos/8, 7-pos%8
		v := int(a[byteIdx]>>bit&1) + carry&1
		a[byteIdx] = a[byteIdx]&^(1<<bit) | byte(v&1)<<bit
		carry = carry>>1 + v>>1
	}
	return a
}

// reverseName is the first labels units of addr (octets or nibbles),
// reversed and dot-terminated: "2.0.10." for 10.0.2 with 8-bit units.
func reverseName(addr []byte, labels, unit int) string {
	parts := make([]string, 0, labels)
	for k := range labels {
		if unit == 8 {
			parts = append(parts, strconv.Itoa(int(addr[k])))
		} else {
			b := addr[k/2]
			if k%2 == 0 {
				b >>= 4
			}
			parts = append(parts, strconv.FormatInt(int64(b&0xf), 16))
		}
	}
	var sb strings.Builder
	for _, part := range slices.Backward(parts) {
		sb.WriteString(part)
		sb.WriteByte('.')
	}
	return sb.String()
}

// expandZone normalizes a zone argument, expanding a CIDR into its
// reverse zones.
func expandZone(z string) ([]string, error) {
	if strings.Contains(z, "/") {
		if _, err := netip.ParsePrefix(z); err == nil {
			return reverseZones(z)
		}
	}
	zone, err := normalizeZone(z)
	if err != nil {
		return nil, err
	}
	return []string{zone}, nil
}
