package hosts

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// Map is the content of a hosts file: addresses by name and names by
// address.
type Map struct {
	// name4 and name6 map lower-case FQDNs to their addresses.
	name4, name6 map[string][]netip.Addr
	// addr maps an address to its names (PTR records).
	addr map[netip.Addr][]string
}

func newMap() *Map {
	return &Map{name4: map[string][]netip.Addr{}, name6: map[string][]netip.Addr{}, addr: map[netip.Addr][]string{}}
}

// Len is the number of entries: addresses of names plus names of addresses.
func (m *Map) Len() int {
	n := 0
	for _, v := range m.name4 {
		n += len(v)
	}
	for _, v := range m.name6 {
		n += len(v)
	}
	for _, v := range m.addr {
		n += len(v)
	}
	return n
}

// maxLine bounds one line of a hosts file; as in CoreDNS (bufio's
// default), reading stops at a longer line.
const maxLine = bufio.MaxScanTokenSize

// Parse reads a hosts file as CoreDNS does: `ADDRESS NAME [ALIASES...]`
// lines, # comments; lines without a valid address or a name are skipped
// and names outside origins ignored. With reverse, every address also maps
// back to its names.
func Parse(r io.Reader, origins plugin.Zones, reverse bool) *Map {
	m := newMap()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := bytes.Fields(line)
		if len(f) < 2 {
			continue
		}
		a := string(f[0])
		if i := strings.IndexByte(a, '%'); i >= 0 {
			a = a[:i] // drop an IPv6 zone
		}
		addr, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		for _, n := range f[1:] {
			name := strings.ToLower(dns.Fqdn(string(n)))
			if origins.Matches(name) == "" {
				continue
			}
			if addr.Is4() {
				m.name4[name] = append(m.name4[name], addr)
			} else {
				m.name6[name] = append(m.name6[name], addr)
			}
			if reverse {
				m.addr[addr] = append(m.addr[addr], name)
			}
		}
	}
	return m
}
