package cache

import (
	"strings"

	"github.com/miekg/dns"
)

// ReplyTTL is the TTL of a reply from e with ttl seconds left: ttl, or
// with keepttl the TTL e was stored with. It does not allocate.
func (c *Cache) ReplyTTL(e *Entry, ttl uint32) uint32 {
	if c.cfg.KeepTTL {
		return e.ttl
	}
	return ttl
}

// VerifyStale reports serve_stale's verify mode: an expired entry is
// served only when the upstream fails. Without it (immediate), it is
// served at once and refreshed behind.
func (c *Cache) VerifyStale() bool { return c.cfg.ServeStaleVerify }

// disabled reports whether answers of kind for name are not cached
// (`disable success|denial ZONES`; SERVFAIL counts as denial, as in
// CoreDNS).
func (c *Cache) disabled(kind int, name string) bool {
	zones := c.cfg.DisableSuccess
	if kind == denial {
		zones = c.cfg.DisableDenial
	}
	if len(zones) == 0 {
		return false
	}
	name = strings.ToLower(name)
	for _, z := range zones {
		if dns.IsSubDomain(z, name) {
			return true
		}
	}
	return false
}
