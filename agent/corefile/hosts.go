package corefile

import (
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// Defaults of the hosts plugin.
const (
	DefaultHostsFile   = "/etc/hosts"
	DefaultHostsTTL    = 3600
	DefaultHostsReload = 5 * time.Second
)

// Hosts is the hosts plugin's configuration, with CoreDNS defaults.
type Hosts struct {
	// Path is the hosts file (default /etc/hosts); a missing file is not
	// an error, it is read when it appears.
	Path string
	// Origins are the zones the plugin answers for (default: the block's).
	Origins []string
	// Inline are the hosts-file lines written in the Corefile.
	Inline []string
	// TTL of the records made (default 3600).
	TTL uint32
	// NoReverse turns off the PTR records made from the entries.
	NoReverse bool
	// Reload is how often the file is checked for changes (default 5s; 0
	// turns reloading off).
	Reload time.Duration
	// Fallthrough is nil without fallthrough, else its zones ("." for all).
	Fallthrough []string
	// Line is the plugin's line in the Corefile.
	Line int
}

// parseHosts parses `hosts [FILE [ZONES...]] { [INLINE] ttl no_reverse
// reload fallthrough }`. As CoreDNS, a line of the block that is not an
// option is a hosts-file line until fallthrough has been given.
func parseHosts(p *blockParser, d *caddyfile.Dispenser) error {
	h := &Hosts{Path: DefaultHostsFile, TTL: DefaultHostsTTL, Reload: DefaultHostsReload, Line: d.Line()}
	args := d.RemainingArgs()
	if len(args) > 0 {
		h.Path = args[0]
		args = args[1:]
	}
	var err error
	if h.Origins, err = p.zonesOrBlock(d, "hosts", args); err != nil {
		return err
	}
	for d.NextBlock() {
		opt := d.Val()
		switch opt {
		case "fallthrough":
			if h.Fallthrough, err = p.fallthroughZones(d, "hosts"); err != nil {
				return err
			}
		case "no_reverse":
			if err := p.noArgs(d, "hosts no_reverse"); err != nil {
				return err
			}
			h.NoReverse = true
		case "ttl":
			args, err := p.args(d, "hosts ttl")
			if err != nil {
				return err
			}
			if len(args) < 1 {
				return p.errf(d, "hosts ttl: needs a time in seconds")
			}
			ttl, err := strconv.Atoi(args[0])
			if err != nil || ttl <= 0 || ttl > 65535 {
				return p.errf(d, "hosts ttl %q: want a number of seconds between 1 and 65535", args[0])
			}
			if len(args) > 1 {
				return p.wrongArgs(d, "hosts ttl", args)
			}
			h.TTL = uint32(ttl)
		case "reload":
			args, err := p.args(d, "hosts reload")
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return p.errf(d, "hosts reload: needs a duration (zero seconds to disable)")
			}
			dur, err := time.ParseDuration(args[0])
			if err != nil || dur < 0 {
				return p.errf(d, "hosts reload %q: want a non-negative duration", args[0])
			}
			h.Reload = dur
		default:
			if h.Fallthrough != nil {
				return p.errf(d, "unknown option %q of plugin \"hosts\" (hosts-file lines must come before fallthrough)", opt)
			}
			rest, err := p.args(d, "hosts line")
			if err != nil {
				return err
			}
			h.Inline = append(h.Inline, strings.Join(append([]string{opt}, rest...), " "))
		}
	}
	p.server.Hosts = h
	return nil
}

// zonesOrBlock normalizes a plugin's ZONES arguments; none means the
// block's zones (CoreDNS's OriginsFromArgsOrServerBlock).
func (p *blockParser) zonesOrBlock(d *caddyfile.Dispenser, plugin string, args []string) ([]string, error) {
	if len(args) == 0 {
		return append([]string(nil), p.server.Zones...), nil
	}
	zones := make([]string, 0, len(args))
	for _, a := range args {
		z, err := normalizeZone(a)
		if err != nil {
			return nil, p.errf(d, "plugin %q: %v", plugin, err)
		}
		zones = append(zones, z)
	}
	return zones, nil
}

// fallthroughZones parses `fallthrough [ZONES...]`: no zones means all.
func (p *blockParser) fallthroughZones(d *caddyfile.Dispenser, plugin string) ([]string, error) {
	args, err := p.args(d, plugin+" fallthrough")
	if err != nil {
		return nil, err
	}
	return p.zonesFromArgs(d, plugin+" fallthrough", args)
}

// noArgs refuses arguments and a block after an option that takes none.
func (p *blockParser) noArgs(d *caddyfile.Dispenser, what string) error {
	args, err := p.args(d, what)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return p.wrongArgs(d, what, args)
	}
	return nil
}
