package corefile

import (
	"net/netip"

	"github.com/coredns/caddy/caddyfile"
)

// DefaultDNS64Prefix is the well-known prefix of RFC 6052.
var DefaultDNS64Prefix = netip.MustParsePrefix("64:ff9b::/96")

// DNS64 is the dns64 plugin's configuration.
type DNS64 struct {
	// Prefix is the IPv6 prefix of synthesized addresses (default
	// 64:ff9b::/96; a length of 32, 40, 48, 56, 64 or 96).
	Prefix netip.Prefix
	// TranslateAll synthesizes even when the answer has AAAA records.
	TranslateAll bool
	// AllowIPv4 translates queries that came over IPv4 too.
	AllowIPv4 bool
}

// parseDNS64 parses `dns64 [PREFIX]` or `dns64 { prefix translate_all
// allow_ipv4 }`.
func parseDNS64(p *blockParser, d *caddyfile.Dispenser) error {
	c := &DNS64{Prefix: DefaultDNS64Prefix}
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		pref, err := p.dns64Prefix(d, args[0])
		if err != nil {
			return err
		}
		c.Prefix = pref
	default:
		return p.wrongArgs(d, "dns64", args)
	}
	for d.NextBlock() {
		opt := d.Val()
		args, err := p.args(d, "dns64 "+opt)
		if err != nil {
			return err
		}
		switch opt {
		case "prefix":
			if len(args) != 1 {
				return p.wrongArgs(d, "dns64 prefix", args)
			}
			if c.Prefix, err = p.dns64Prefix(d, args[0]); err != nil {
				return err
			}
		case "translate_all", "allow_ipv4":
			if len(args) != 0 {
				return p.wrongArgs(d, "dns64 "+opt, args)
			}
			if opt == "translate_all" {
				c.TranslateAll = true
			} else {
				c.AllowIPv4 = true
			}
		default:
			return p.errf(d, "unknown option %q of plugin \"dns64\"", opt)
		}
	}
	p.server.DNS64 = c
	return nil
}

func (p *blockParser) dns64Prefix(d *caddyfile.Dispenser, s string) (netip.Prefix, error) {
	pref, err := netip.ParsePrefix(s)
	if err != nil {
		return pref, p.errf(d, "dns64 prefix %q: %v", s, err)
	}
	if !pref.Addr().Is6() || pref.Addr().Is4In6() {
		return pref, p.errf(d, "dns64 prefix %q: not an IPv6 prefix", s)
	}
	if n := pref.Bits(); n%8 != 0 || n < 32 || n > 96 {
		return pref, p.errf(d, "dns64 prefix %q: invalid prefix length (want 32, 40, 48, 56, 64 or 96)", s)
	}
	return pref.Masked(), nil
}

// parseWhoami parses `whoami` (no arguments).
func parseWhoami(p *blockParser, d *caddyfile.Dispenser) error {
	if args := d.RemainingArgs(); len(args) > 0 {
		return p.wrongArgs(d, "whoami", args)
	}
	if err := p.noBlock(d, "whoami"); err != nil {
		return err
	}
	p.server.Whoami = true
	return nil
}
