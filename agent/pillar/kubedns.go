package pillar

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Keys of the kube-dns ConfigMap that the agent reads (each a file in the
// mounted directory, holding JSON).
const (
	KeyStubDomains         = "stubDomains"
	KeyUpstreamNameservers = "upstreamNameservers"
)

// maxUpstreamNameservers is kube-dns's limit on upstreamNameservers.
const maxUpstreamNameservers = 3

// maxConfigFile bounds what is read from a ConfigMap file.
const maxConfigFile = 1 << 20

// KubeDNSConfig is the part of the kube-dns ConfigMap node-cache applies.
type KubeDNSConfig struct {
	// StubDomains maps a domain to the nameservers (IP or IP:port) that
	// serve it: {"acme.local": ["1.2.3.4"]}.
	StubDomains map[string][]string
	// UpstreamNameservers replace the node's resolv.conf for other names:
	// ["8.8.8.8", "8.8.4.4:53"].
	UpstreamNameservers []string
}

// LoadKubeDNSConfig reads the kube-dns ConfigMap mounted at dir. An empty
// dir, a missing directory or missing keys mean "not configured"; bad JSON
// or invalid entries are errors naming the key.
func LoadKubeDNSConfig(dir string) (*KubeDNSConfig, error) {
	c := &KubeDNSConfig{}
	if dir == "" {
		return c, nil
	}
	if b, err := readKey(dir, KeyUpstreamNameservers); err != nil {
		return nil, err
	} else if b != nil {
		if err := json.Unmarshal(b, &c.UpstreamNameservers); err != nil {
			return nil, fmt.Errorf("kube-dns ConfigMap %s: want a JSON list of addresses: %w", KeyUpstreamNameservers, err)
		}
	}
	if b, err := readKey(dir, KeyStubDomains); err != nil {
		return nil, err
	} else if b != nil {
		if err := json.Unmarshal(b, &c.StubDomains); err != nil {
			return nil, fmt.Errorf("kube-dns ConfigMap %s: want a JSON map of domain to address list: %w", KeyStubDomains, err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// readKey returns the content of dir/key, nil when it does not exist.
func readKey(dir, key string) ([]byte, error) {
	path := filepath.Join(dir, key)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kube-dns ConfigMap: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("kube-dns ConfigMap: reading %s: %w", path, err)
	}
	if len(b) > maxConfigFile {
		return nil, fmt.Errorf("kube-dns ConfigMap: %s is larger than %d bytes", path, maxConfigFile)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil, nil
	}
	return b, nil
}

// Validate checks the entries as kube-dns and node-cache do, restricted to
// what the agent's forward accepts (IP addresses with optional port).
func (c *KubeDNSConfig) Validate() error {
	if len(c.UpstreamNameservers) > maxUpstreamNameservers {
		return fmt.Errorf("kube-dns ConfigMap %s: at most %d entries, got %d", KeyUpstreamNameservers, maxUpstreamNameservers, len(c.UpstreamNameservers))
	}
	for _, ns := range c.UpstreamNameservers {
		if err := checkNameserver(ns); err != nil {
			return fmt.Errorf("kube-dns ConfigMap %s: %w", KeyUpstreamNameservers, err)
		}
	}
	for domain, servers := range c.StubDomains {
		if err := checkStubDomain(domain); err != nil {
			return fmt.Errorf("kube-dns ConfigMap %s: %w", KeyStubDomains, err)
		}
		if len(servers) == 0 {
			return fmt.Errorf("kube-dns ConfigMap %s: domain %q has no nameservers", KeyStubDomains, domain)
		}
		for _, ns := range servers {
			if err := checkNameserver(ns); err != nil {
				return fmt.Errorf("kube-dns ConfigMap %s: domain %q: %w", KeyStubDomains, domain, err)
			}
		}
	}
	return nil
}

// checkNameserver accepts IP, IP:port and [IPv6]:port.
func checkNameserver(ns string) error {
	if ap, err := netip.ParseAddrPort(ns); err == nil && ap.Port() != 0 && ap.Addr().Zone() == "" {
		return nil
	}
	if ip, err := netip.ParseAddr(ns); err == nil && ip.Zone() == "" {
		return nil
	}
	return fmt.Errorf("nameserver %q is not an IP address or IP:port", ns)
}

// checkStubDomain accepts a DNS-1123 subdomain, as kube-dns does.
func checkStubDomain(d string) error {
	bad := fmt.Errorf("invalid domain name %q", d)
	if d == "" || len(d) > 253 {
		return bad
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		for _, ch := range label {
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				return bad
			}
		}
	}
	return nil
}
