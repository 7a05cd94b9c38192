package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// API limits on a pod's dnsConfig, as enforced by the Kubernetes API server
// (k8s.io/kubernetes pkg/apis/core/validation).
const (
	// MaxNameservers is the most nameservers a dnsConfig may list.
	MaxNameservers = 3
	// MaxSearches is the most search domains a dnsConfig may list.
	MaxSearches = 32
	// MaxSearchChars is the longest the search list may be, joined with spaces.
	MaxSearchChars = 2048
)

// ValidateDNS checks a pod's dnsPolicy and dnsConfig against the rules the API
// server applies when a pod is created: dnsPolicy None needs a dnsConfig with
// at least one nameserver; at most 3 nameservers, each an IP address; at most
// 32 search domains, 2048 characters joined, each a DNS-1123 subdomain (a
// trailing dot is allowed); every option has a name. It is stricter than the
// API server on IP syntax (no zones, no leading zeros, no IPv4-mapped IPv6) so
// that anything it accepts is accepted by every API server version.
func ValidateDNS(policy corev1.DNSPolicy, cfg *corev1.PodDNSConfig) error {
	var errs []error
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone, "":
	default:
		errs = append(errs, fmt.Errorf("dnsPolicy %q is not supported", policy))
	}
	if policy == corev1.DNSNone {
		if cfg == nil {
			return errors.Join(append(errs, errors.New("dnsConfig: required when dnsPolicy is None"))...)
		}
		if len(cfg.Nameservers) == 0 {
			return errors.Join(append(errs, errors.New("dnsConfig.nameservers: at least one is required when dnsPolicy is None"))...)
		}
	}
	if cfg == nil {
		return errors.Join(errs...)
	}
	if len(cfg.Nameservers) > MaxNameservers {
		errs = append(errs, fmt.Errorf("dnsConfig.nameservers: %d entries, at most %d allowed", len(cfg.Nameservers), MaxNameservers))
	}
	for i, ns := range cfg.Nameservers {
		if err := ValidateIP(ns); err != nil {
			errs = append(errs, fmt.Errorf("dnsConfig.nameservers[%d]: %w", i, err))
		}
	}
	if len(cfg.Searches) > MaxSearches {
		errs = append(errs, fmt.Errorf("dnsConfig.searches: %d entries, at most %d allowed", len(cfg.Searches), MaxSearches))
	}
	if n := searchChars(cfg.Searches); n > MaxSearchChars {
		errs = append(errs, fmt.Errorf("dnsConfig.searches: %d characters, at most %d allowed", n, MaxSearchChars))
	}
	for i, s := range cfg.Searches {
		if err := ValidateSearch(s); err != nil {
			errs = append(errs, fmt.Errorf("dnsConfig.searches[%d]: %w", i, err))
		}
	}
	for i, o := range cfg.Options {
		if o.Name == "" {
			errs = append(errs, fmt.Errorf("dnsConfig.options[%d].name: must not be empty", i))
		}
	}
	return errors.Join(errs...)
}

// ValidateIP reports whether s is an IP address the API server accepts as a
// nameserver, in its canonical form.
func ValidateIP(s string) error {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%q is not a valid IP address", s)
	}
	if addr.Zone() != "" {
		return fmt.Errorf("%q: IP address must not have a zone", s)
	}
	if addr.Is4In6() {
		return fmt.Errorf("%q: IPv4-mapped IPv6 addresses are not allowed", s)
	}
	return nil
}

// ValidateSearch reports whether s is a valid search domain: a DNS-1123
// subdomain, optionally with a trailing dot.
func ValidateSearch(s string) error {
	if msgs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s, ".")); len(msgs) > 0 {
		return fmt.Errorf("%q: %s", s, strings.Join(msgs, "; "))
	}
	return nil
}

// searchChars is the length of the search list joined with single spaces.
func searchChars(searches []string) int {
	if len(searches) == 0 {
		return 0
	}
	n := len(searches) - 1
	for _, s := range searches {
		n += len(s)
	}
	return n
}
