package corefile

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// Defaults and limits of the plugins parsed here (CoreDNS 1.13.2's).
const (
	DefaultBufSize   = 1232
	MinBufSize       = 512
	MaxBufSize       = 4096
	DefaultPprofAddr = "localhost:6053"
	MinTimeout       = time.Second
	MaxTimeout       = 24 * time.Hour

	// CommonLogFormat is the log plugin's default format ({common}).
	CommonLogFormat = `{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}`
	// CombinedLogFormat is {combined}: the common format and the opcode.
	CombinedLogFormat = CommonLogFormat + ` "{>opcode}"`
)

// parseErrorsPlugin parses `errors [stdout] { stacktrace; consolidate
// DURATION REGEXP [LEVEL] }`.
func parseErrorsPlugin(p *blockParser, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	// CoreDNS accepts `errors stdout` (the only log target it knows).
	if len(args) > 1 || len(args) == 1 && args[0] != "stdout" {
		return p.errf(d, "plugin \"errors\": unsupported arguments %q", args)
	}
	p.server.Errors = true
	for d.NextBlock() {
		opt := d.Val()
		args, err := p.args(d, "errors "+opt)
		if err != nil {
			return err
		}
		switch opt {
		case "stacktrace":
			if len(args) != 0 {
				return p.wrongArgs(d, "errors stacktrace", args)
			}
			p.server.ErrorStacktrace = true
		case "consolidate":
			r, err := p.consolidate(d, args)
			if err != nil {
				return err
			}
			p.server.ErrorRules = append(p.server.ErrorRules, r)
		default:
			return p.errf(d, "unknown option %q of plugin \"errors\"", opt)
		}
	}
	return nil
}

func (p *blockParser) consolidate(d *caddyfile.Dispenser, args []string) (ErrorRule, error) {
	if len(args) < 2 || len(args) > 3 {
		return ErrorRule{}, p.wrongArgs(d, "errors consolidate", args)
	}
	dur, err := time.ParseDuration(args[0])
	if err != nil || dur <= 0 {
		return ErrorRule{}, p.errf(d, "errors consolidate duration %q: want a positive duration", args[0])
	}
	if _, err := regexp.Compile(args[1]); err != nil {
		return ErrorRule{}, p.errf(d, "errors consolidate: %v", err)
	}
	r := ErrorRule{Duration: dur, Pattern: args[1], Level: "warning"}
	if len(args) == 3 {
		switch lvl := strings.ToLower(args[2]); lvl {
		case "warning", "error", "info", "debug":
			r.Level = lvl
		default:
			return ErrorRule{}, p.errf(d, "errors consolidate level %q: want warning, error, info or debug", args[2])
		}
	}
	return r, nil
}

// parseLogPlugin parses `log [NAMES...] [FORMAT] { class CLASSES... }`; it
// may appear several times, each adding rules (as CoreDNS).
func parseLogPlugin(p *blockParser, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	format := CommonLogFormat
	names := []string{"."}
	switch len(args) {
	case 0:
	case 1:
		names = args
	default:
		// With several arguments, the last one is the format when it has
		// a placeholder (CoreDNS's rule).
		if last := args[len(args)-1]; strings.Contains(last, "{") {
			format = strings.NewReplacer("{common}", CommonLogFormat, "{combined}", CombinedLogFormat).Replace(last)
			args = args[:len(args)-1]
		}
		names = args
	}
	if err := p.checkLogFormat(d, format); err != nil {
		return err
	}
	var classes []string
	for d.NextBlock() {
		if d.Val() != "class" {
			return p.errf(d, "unknown option %q of plugin \"log\"", d.Val())
		}
		args, err := p.args(d, "log class")
		if err != nil {
			return err
		}
		if len(args) == 0 {
			return p.wrongArgs(d, "log class", args)
		}
		for _, c := range args {
			switch c = strings.ToLower(c); c {
			case "all", "success", "denial", "error":
				classes = append(classes, c)
			default:
				return p.errf(d, "log class %q: want all, success, denial or error", c)
			}
		}
	}
	if slices.Contains(classes, "all") {
		classes = nil
	}
	for _, n := range names {
		zone, err := normalizeZone(n)
		if err != nil {
			return p.errf(d, "plugin \"log\": %v", err)
		}
		p.server.LogRules = append(p.server.LogRules, LogRule{Name: zone, Format: format, Classes: classes})
	}
	p.server.Log = true
	return nil
}

// checkLogFormat refuses the placeholders the agent cannot fill in
// ({local}); unknown ones stay literal text, as in CoreDNS, and {/LABEL}
// metadata is "-" (the agent has no metadata plugin).
func (p *blockParser) checkLogFormat(d *caddyfile.Dispenser, format string) error {
	if strings.Contains(format, "{local}") {
		return p.errf(d, "log format: placeholder {local} is not supported (a listener on all addresses does not know the local IP of a query)")
	}
	return nil
}

// parseBufsize parses `bufsize [SIZE]` (512-4096, default 1232).
func parseBufsize(p *blockParser, d *caddyfile.Dispenser) error {
	args, err := p.args(d, "bufsize")
	if err != nil {
		return err
	}
	size := DefaultBufSize
	switch len(args) {
	case 0:
	case 1:
		n, err := strconv.Atoi(args[0])
		if err != nil || n < MinBufSize || n > MaxBufSize {
			return p.errf(d, "bufsize %q: want a number between %d and %d", args[0], MinBufSize, MaxBufSize)
		}
		size = n
	default:
		return p.wrongArgs(d, "bufsize", args)
	}
	p.server.BufSize = size
	return nil
}

// parseTimeouts parses `timeouts { read|write|idle DURATION }`; a
// duration is Go's or a number of seconds, between 1s and 24h.
func parseTimeouts(p *blockParser, d *caddyfile.Dispenser) error {
	if args := d.RemainingArgs(); len(args) > 0 {
		return p.wrongArgs(d, "timeouts", args)
	}
	t := &Timeouts{}
	n := 0
	for d.NextBlock() {
		opt := d.Val()
		args, err := p.args(d, "timeouts "+opt)
		if err != nil {
			return err
		}
		if len(args) != 1 {
			return p.wrongArgs(d, "timeouts "+opt, args)
		}
		v := args[0]
		if _, err := strconv.Atoi(v); err == nil {
			v += "s"
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < MinTimeout || dur > MaxTimeout {
			return p.errf(d, "timeouts %s %q: want a duration between %s and %s", opt, args[0], MinTimeout, MaxTimeout)
		}
		switch opt {
		case "read":
			t.Read = dur
		case "write":
			t.Write = dur
		case "idle":
			t.Idle = dur
		default:
			return p.errf(d, "unknown option %q of plugin \"timeouts\"", opt)
		}
		n++
	}
	if n == 0 {
		return p.errf(d, "plugin \"timeouts\": a block with at least one timeout is required")
	}
	p.server.Timeouts = t
	return nil
}

func parseDebug(p *blockParser, d *caddyfile.Dispenser) error {
	if args := d.RemainingArgs(); len(args) > 0 {
		return p.wrongArgs(d, "debug", args)
	}
	if err := p.noBlock(d, "debug"); err != nil {
		return err
	}
	p.server.Debug = true
	return nil
}

// parsePprof parses `pprof [ADDRESS] { block [RATE] }`.
func parsePprof(p *blockParser, d *caddyfile.Dispenser) error {
	addr, err := p.listenAddr(d, "pprof", DefaultPprofAddr)
	if err != nil {
		return err
	}
	p.server.Pprof = addr
	for d.NextBlock() {
		if d.Val() != "block" {
			return p.errf(d, "unknown option %q of plugin \"pprof\"", d.Val())
		}
		args, err := p.args(d, "pprof block")
		if err != nil {
			return err
		}
		rate := 1
		switch len(args) {
		case 0:
		case 1:
			if rate, err = strconv.Atoi(args[0]); err != nil || rate <= 0 {
				return p.errf(d, "pprof block rate %q: want a positive number", args[0])
			}
		default:
			return p.wrongArgs(d, "pprof block", args)
		}
		p.server.PprofBlockRate = rate
	}
	return nil
}

// parseTrace refuses the trace plugin: it reports spans to a Zipkin or
// Datadog collector through OpenTracing clients the agent does not carry.
func parseTrace(p *blockParser, d *caddyfile.Dispenser) error {
	return p.errf(d, "plugin \"trace\" is not supported: the agent has no Zipkin or Datadog tracing client (remove the line; see docs/agent-config.md)")
}

// parseBindPlugin parses `bind ADDRESS|IFACE... { except ADDRESS|IFACE... }`.
// An interface stands for its addresses at parse time (start or reload),
// as in CoreDNS; its IPv6 link-local addresses are left out (they need a
// zone). except removes addresses of this bind line only.
func parseBindPlugin(p *blockParser, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return p.errf(d, "plugin \"bind\": needs at least one address or interface name")
	}
	line := d.Line()
	ips, err := p.bindAddrs(d, args)
	if err != nil {
		return err
	}
	var except []string
	for d.NextBlock() {
		if d.Val() != "except" {
			return p.errf(d, "unknown option %q of plugin \"bind\"", d.Val())
		}
		args, err := p.args(d, "bind except")
		if err != nil {
			return err
		}
		if len(args) == 0 {
			return p.errf(d, "bind except: needs at least one address or interface name")
		}
		ex, err := p.bindAddrs(d, args)
		if err != nil {
			return err
		}
		except = append(except, ex...)
	}
	for _, s := range ips {
		if contains(except, s) {
			continue
		}
		if p.bound == nil {
			p.bound = map[string]bool{}
		}
		if !p.bound[s] {
			p.bound[s] = true
			p.server.Bind = append(p.server.Bind, s)
		}
	}
	if len(p.server.Bind) == 0 {
		// CoreDNS would listen on every address then: refuse instead.
		return &Error{File: p.opts.Filename, Line: line, Msg: "plugin \"bind\": no address left to listen on"}
	}
	return nil
}

func contains(list []string, s string) bool {
	return slices.Contains(list, s)
}

// bindAddrs expands bind arguments: IP addresses, or interface names.
func (p *blockParser) bindAddrs(d *caddyfile.Dispenser, args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		if ip, err := netip.ParseAddr(a); err == nil {
			if ip.Zone() != "" {
				return nil, p.errf(d, "plugin \"bind\": %q: zoned addresses are not supported", a)
			}
			out = append(out, ip.Unmap().String())
			continue
		}
		addrs, found, err := p.opts.interfaceAddrs(a)
		if err != nil {
			return nil, p.errf(d, "plugin \"bind\": interface %q: %v", a, err)
		}
		if !found {
			return nil, p.errf(d, "plugin \"bind\": %q is not an IP address or an interface name", a)
		}
		for _, ip := range addrs {
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, ip.Unmap().WithZone("").String())
		}
	}
	return out, nil
}

// interfaceAddrs returns the addresses of the interface name, with
// found false when there is no such interface.
func (o *ParseOptions) interfaceAddrs(name string) ([]netip.Addr, bool, error) {
	if o.InterfaceAddrs != nil {
		return o.InterfaceAddrs(name)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, false, nil //nolint:nilerr // no such interface
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, true, fmt.Errorf("listing its addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, true, nil
}

// cacheMoreOption parses the cache options beyond those of the official
// ConfigMap: keepttl and disable success|denial [ZONES...].
func (p *blockParser) cacheMoreOption(d *caddyfile.Dispenser, opt string, args []string, c *Cache) error {
	switch opt {
	case "keepttl":
		if len(args) != 0 {
			return p.wrongArgs(d, "cache keepttl", args)
		}
		c.KeepTTL = true
	case "disable":
		if len(args) == 0 {
			return p.wrongArgs(d, "cache disable", args)
		}
		zones := []string{"."}
		if len(args) > 1 {
			zones = nil
			for _, z := range args[1:] {
				zs, err := expandZone(z)
				if err != nil {
					return p.errf(d, "cache disable: %v", err)
				}
				zones = append(zones, zs...)
			}
		}
		switch args[0] {
		case "success":
			c.DisableSuccess = zones
		case "denial":
			c.DisableDenial = zones
		default:
			return p.errf(d, "cache disable %q: want success or denial", args[0])
		}
	default:
		return p.errf(d, "unknown option %q of plugin \"cache\"", opt)
	}
	return nil
}
