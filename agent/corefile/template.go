package corefile

import (
	"strconv"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin/gotemplate"
)

// Template is one `template CLASS TYPE [ZONES...] { ... }` of the template
// plugin; a block's templates are tried in file order.
type Template struct {
	// Class and Type are the query class and type answered (ANY for all).
	Class, Type uint16
	// Zones default to the block's.
	Zones []string
	// Match are the regular expressions tried on the query name (default
	// ".*"); the first that matches wins.
	Match []string
	// Answer, Additional and Authority are Go templates of records.
	Answer, Additional, Authority []string
	// Rcode of the reply (default NOERROR).
	Rcode int
	// EDE, when set, adds an extended DNS error (RFC 8914).
	EDE *EDE
	// Fallthrough is nil without fallthrough, else its zones.
	Fallthrough []string
	// Line is the template's line in the Corefile.
	Line int
}

// EDE is an extended DNS error: its code and optional text.
type EDE struct {
	Code   uint16
	Reason string
}

func parseTemplate(p *blockParser, d *caddyfile.Dispenser) error {
	t := Template{Line: d.Line()}
	args := d.RemainingArgs()
	if len(args) < 2 {
		return p.errf(d, "plugin \"template\": want CLASS TYPE [ZONES...], got %q", args)
	}
	var ok bool
	if t.Class, ok = dns.StringToClass[args[0]]; !ok {
		return p.errf(d, "plugin \"template\": invalid query class %s", args[0])
	}
	if t.Type, ok = dns.StringToType[args[1]]; !ok {
		return p.errf(d, "plugin \"template\": invalid RR type %s", args[1])
	}
	var err error
	if t.Zones, err = p.zonesOrBlock(d, "template", args[2:]); err != nil {
		return err
	}
	for d.NextBlock() {
		if err := p.templateOption(d, &t); err != nil {
			return err
		}
	}
	if len(t.Match) == 0 {
		t.Match = []string{".*"}
	}
	p.server.Templates = append(p.server.Templates, t)
	return nil
}

func (p *blockParser) templateOption(d *caddyfile.Dispenser, t *Template) error {
	opt := d.Val()
	args, err := p.args(d, "template "+opt)
	if err != nil {
		return err
	}
	switch opt {
	case "match":
		if len(args) == 0 {
			return p.wrongArgs(d, "template match", args)
		}
		for _, re := range args {
			if err := checkRegex(re, ""); err != nil {
				return p.errf(d, "template match: could not parse regex: %s, %v", re, err)
			}
		}
		t.Match = append(t.Match, args...)
	case "answer", "additional", "authority":
		if len(args) == 0 {
			return p.wrongArgs(d, "template "+opt, args)
		}
		for _, text := range args {
			if _, err := gotemplate.Compile(opt, text); err != nil {
				return p.errf(d, "template %s: could not compile template: %v", opt, err)
			}
		}
		switch opt {
		case "answer":
			t.Answer = append(t.Answer, args...)
		case "additional":
			t.Additional = append(t.Additional, args...)
		default:
			t.Authority = append(t.Authority, args...)
		}
	case "rcode":
		if len(args) != 1 {
			return p.wrongArgs(d, "template rcode", args)
		}
		rc, ok := dns.StringToRcode[args[0]]
		if !ok {
			return p.errf(d, "template rcode: unknown rcode %s", args[0])
		}
		t.Rcode = rc
	case "ederror":
		if len(args) != 1 && len(args) != 2 {
			return p.wrongArgs(d, "template ederror", args)
		}
		code, err := strconv.ParseUint(args[0], 10, 16)
		if err != nil {
			return p.errf(d, "template ederror: extended DNS error code %q: %v", args[0], err)
		}
		t.EDE = &EDE{Code: uint16(code)}
		if len(args) == 2 {
			t.EDE.Reason = args[1]
		}
	case "fallthrough":
		if t.Fallthrough, err = p.zonesFromArgs(d, "template fallthrough", args); err != nil {
			return err
		}
	case "upstream":
		// Obsolete: CoreDNS 1.13 reads and drops its arguments, CNAME
		// answers are always resolved.
	default:
		return p.errf(d, "unknown option %q of plugin \"template\"", opt)
	}
	return nil
}

// zonesFromArgs is fallthroughZones on arguments already read.
func (p *blockParser) zonesFromArgs(d *caddyfile.Dispenser, what string, args []string) ([]string, error) {
	if len(args) == 0 {
		return []string{"."}, nil
	}
	zones := make([]string, 0, len(args))
	for _, a := range args {
		z, err := normalizeZone(a)
		if err != nil {
			return nil, p.errf(d, "%s: %v", what, err)
		}
		zones = append(zones, z)
	}
	return zones, nil
}
