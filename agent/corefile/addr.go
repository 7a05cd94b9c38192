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
		keyZones, p, err := parseKey(key, defaultPort)
		if err != nil {
			return nil, 0, err
		}
		if port != 0 && p != port {
			return nil, 0, fmt.Errorf("server block keys use different ports (%d and %d); use one block per port", port, p)
		}
		port = p
		for _, zone := range keyZones {
			if seen[zone] {
				return nil, 0, fmt.Errorf("zone %q is listed twice in the block", zone)
			}
			seen[zone] = true
			zones = append(zones, zone)
		}
	}
	if len(zones) == 0 {
		return nil, 0, fmt.Errorf("server block without zone")
	}
	return zones, port, nil
}

// parseKey parses one server block key into its zones (a CIDR reverse
// zone, 10.0.0.0/15, may stand for several) and port.
func parseKey(key string, defaultPort int) ([]string, int, error) {
	k := strings.ToLower(key)
	if rest, ok := strings.CutPrefix(k, "dns://"); ok {
		k = rest
	} else if i := strings.Index(k, "://"); i >= 0 {
		return nil, 0, fmt.Errorf("server block %q: transport %q is not supported (only dns://)", key, k[:i])
	}
	port := defaultPort
	// A port is the number after the last colon; in an IPv6 CIDR
	// (fd00::/8) what follows the last colon is not one.
	if i := strings.LastIndex(k, ":"); i >= 0 && !strings.Contains(k[i+1:], "/") {
		p, err := parsePort(k[i+1:])
		if err != nil {
			return nil, 0, fmt.Errorf("server block %q: %w", key, err)
		}
		port, k = p, k[:i]
	}
	zones, err := expandZone(k)
	if err != nil {
		return nil, 0, fmt.Errorf("server block %q: %w", key, err)
	}
	return zones, port, nil
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
// dns:// and tls:// addresses (tls://IP%NAME[:port] with a TLS server
// name; port 853 by default), and resolv.conf-style files (any argument
// with a '/' that is not an address), read with readFile. It returns the
// host:port addresses and the TLS ones with their server names.
func parseUpstreams(to []string, readFile func(string) ([]byte, error)) ([]string, map[string]string, error) {
	var out []string
	var tlsNames map[string]string
	plain := map[string]bool{}
	for _, t := range to {
		addr := t
		if rest, ok := strings.CutPrefix(strings.ToLower(addr), "tls://"); ok {
			hp, name, err := parseTLSUpstream(addr[len(addr)-len(rest):])
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %w", t, err)
			}
			if plain[hp] {
				return nil, nil, fmt.Errorf("%s is given both with and without tls://", hp)
			}
			if tlsNames == nil {
				tlsNames = map[string]string{}
			}
			if prev, dup := tlsNames[hp]; dup && prev != name {
				return nil, nil, fmt.Errorf("%s is given twice with different TLS server names", hp)
			}
			tlsNames[hp] = name
			out = append(out, hp)
			continue
		}
		if rest, ok := strings.CutPrefix(strings.ToLower(addr), "dns://"); ok {
			addr = addr[len(addr)-len(rest):]
		} else if i := strings.Index(addr, "://"); i >= 0 {
			return nil, nil, fmt.Errorf("transport %q of %q is not supported (only dns:// and tls://)", addr[:i], t)
		}
		var found []string
		if hp, err := parseHostPort(addr, 53); err == nil {
			found = []string{hp}
		} else {
			if !strings.Contains(addr, "/") {
				return nil, nil, fmt.Errorf("not an IP address or file: %q", t)
			}
			data, err := readFile(addr)
			if err != nil {
				return nil, nil, fmt.Errorf("reading %s: %w", addr, err)
			}
			servers, err := resolvConfServers(data)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", addr, err)
			}
			if len(servers) == 0 {
				return nil, nil, fmt.Errorf("no nameservers found in %s", addr)
			}
			found = servers
		}
		for _, hp := range found {
			if _, isTLS := tlsNames[hp]; isTLS {
				return nil, nil, fmt.Errorf("%s is given both with and without tls://", hp)
			}
			plain[hp] = true
		}
		out = append(out, found...)
	}
	if len(out) > maxUpstreams {
		return nil, nil, fmt.Errorf("more than %d upstreams: %d", maxUpstreams, len(out))
	}
	return out, tlsNames, nil
}

// parseTLSUpstream parses what follows tls://: IP, IP:port, [IPv6]:port,
// optionally with a TLS server name after a '%' (IP%NAME:port, as
// CoreDNS). The port defaults to 853.
func parseTLSUpstream(s string) (hostPort, name string, err error) {
	host := s
	if i := strings.LastIndex(s, "%"); i >= 0 {
		host, name = s[:i], s[i+1:]
		if j := strings.LastIndex(name, ":"); j >= 0 {
			host += name[j:]
			name = name[:j]
		}
		if _, ok := dns.IsDomainName(name); !ok || name == "" || strings.ContainsAny(name, " \t\\\"{}/") {
			return "", "", fmt.Errorf("TLS server name %q is not a host name", name)
		}
	}
	hp, err := parseHostPort(host, 853)
	if err != nil {
		return "", "", fmt.Errorf("not an IP address: %w", err)
	}
	return hp, strings.TrimSuffix(name, "."), nil
}

// parseHostPort accepts IP, IP:port, [IPv6] and [IPv6]:port and returns
// host:port with port def by default.
func parseHostPort(s string, def uint16) (string, error) {
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
	return netip.AddrPortFrom(ip.Unmap(), def).String(), nil
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
