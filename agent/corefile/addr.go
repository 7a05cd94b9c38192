package corefile

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// maxUpstreams is CoreDNS forward's limit of TO addresses.
const maxUpstreams = 15

// parseKeys turns server block keys ("cluster.local:53", ".", "dns://.:53")
// into zones and the block's port.
func parseKeys(keys []string, defaultPort int) ([]string, int, error) {
	port := 0
	var zones []string
	seen := map[string]bool{}
	for _, key := range keys {
		zone, p, err := parseKey(key, defaultPort)
		if err != nil {
			return nil, 0, err
		}
		if port != 0 && p != port {
			return nil, 0, fmt.Errorf("server block keys use different ports (%d and %d); use one block per port", port, p)
		}
		port = p
		if seen[zone] {
			return nil, 0, fmt.Errorf("zone %q is listed twice in the block", zone)
		}
		seen[zone] = true
		zones = append(zones, zone)
	}
	if len(zones) == 0 {
		return nil, 0, fmt.Errorf("server block without zone")
	}
	return zones, port, nil
}

func parseKey(key string, defaultPort int) (string, int, error) {
	k := strings.ToLower(key)
	if rest, ok := strings.CutPrefix(k, "dns://"); ok {
		k = rest
	} else if i := strings.Index(k, "://"); i >= 0 {
		return "", 0, fmt.Errorf("server block %q: transport %q is not supported (only dns://)", key, k[:i])
	}
	port := defaultPort
	if i := strings.LastIndex(k, ":"); i >= 0 {
		p, err := parsePort(k[i+1:])
		if err != nil {
			return "", 0, fmt.Errorf("server block %q: %w", key, err)
		}
		port, k = p, k[:i]
	}
	if strings.Contains(k, "/") {
		return "", 0, fmt.Errorf("server block %q: CIDR reverse zones are not supported; write the in-addr.arpa zone", key)
	}
	zone, err := normalizeZone(k)
	if err != nil {
		return "", 0, fmt.Errorf("server block %q: %w", key, err)
	}
	return zone, port, nil
}

// normalizeZone returns z as a lower-case FQDN; "" means the root.
func normalizeZone(z string) (string, error) {
	z = strings.ToLower(z)
	if z == "" || z == "." {
		return ".", nil
	}
	if strings.HasPrefix(z, ".") || strings.Contains(z, "..") {
		return "", fmt.Errorf("%q is not a valid zone name", z)
	}
	z = dns.Fqdn(z)
	if _, ok := dns.IsDomainName(z); !ok || strings.ContainsAny(z, " \t\\\"{}") {
		return "", fmt.Errorf("%q is not a valid zone name", z)
	}
	return z, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want a number between 1 and 65535", s)
	}
	return n, nil
}

// checkListenAddr validates a host:port listen address (health, ready,
// prometheus). The host may be empty (all addresses), an IP or "localhost".
func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	if host != "" && host != "localhost" {
		if ip, err := netip.ParseAddr(host); err != nil || ip.Zone() != "" {
			return fmt.Errorf("address %q: host must be an IP address, localhost or empty", addr)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("address %q: port must be a number between 0 and 65535", addr)
	}
	return nil
}

// parseUpstreams expands forward's TO arguments: IP[:port], [IPv6]:port,
// dns:// addresses, and resolv.conf-style files (any argument with a '/'
// that is not an address), read with readFile.
func parseUpstreams(to []string, readFile func(string) ([]byte, error)) ([]string, error) {
	var out []string
	for _, t := range to {
		addr := t
		if rest, ok := strings.CutPrefix(strings.ToLower(addr), "dns://"); ok {
			addr = rest
		} else if i := strings.Index(addr, "://"); i >= 0 {
			return nil, fmt.Errorf("transport %q of %q is not supported (only dns://)", addr[:i], t)
		}
		if hp, err := parseHostPort(addr); err == nil {
			out = append(out, hp)
			continue
		}
		if !strings.Contains(addr, "/") {
			return nil, fmt.Errorf("not an IP address or file: %q", t)
		}
		data, err := readFile(addr)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", addr, err)
		}
		servers, err := resolvConfServers(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", addr, err)
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("no nameservers found in %s", addr)
		}
		out = append(out, servers...)
	}
	if len(out) > maxUpstreams {
		return nil, fmt.Errorf("more than %d upstreams: %d", maxUpstreams, len(out))
	}
	return out, nil
}

// parseHostPort accepts IP, IP:port, [IPv6] and [IPv6]:port and returns
// host:port with port 53 by default.
func parseHostPort(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("port 0 in %q", s)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", err
	}
	return netip.AddrPortFrom(ip.Unmap(), 53).String(), nil
}

// resolvConfServers returns the nameservers of a resolv.conf as host:53.
func resolvConfServers(data []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: nameserver %q is not an IP address", n, f[1])
		}
		out = append(out, netip.AddrPortFrom(ip.Unmap(), 53).String())
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
