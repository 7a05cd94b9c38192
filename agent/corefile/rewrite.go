package corefile

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"
)

// RewriteRule is one rule of the rewrite plugin, as CoreDNS reads it:
// `rewrite [continue|stop] FIELD [MATCH] FROM TO [OPTIONS]`.
type RewriteRule struct {
	// Continue is the continue mode (the default, stop, ends the rules
	// after a match).
	Continue bool
	// Field is "name", "type", "class", "ttl", "rcode", "cname" or
	// "edns0".
	Field string
	// Match is "exact", "prefix", "suffix", "substring" or "regex" (name,
	// ttl, rcode and cname rules).
	Match string
	// From is the name or pattern matched, To the name (or cname) rule's
	// replacement (lower-case FQDNs as CoreDNS normalizes them, but a
	// regex; a cname rule's are only lower-cased).
	From, To string
	// FromCode and ToCode are the type or class rule's values.
	FromCode, ToCode uint16
	// TTLMin and TTLMax are the ttl rule's range.
	TTLMin, TTLMax uint32
	// RcodeFrom and RcodeTo are the rcode rule's values.
	RcodeFrom, RcodeTo int
	// AnswerAuto is the name rule's `answer auto` (always on for exact).
	AnswerAuto bool
	// Answers are the name rule's `answer name|value FROM TO` rewrites.
	Answers []RewriteAnswer
	// EDNS0 is the edns0 rule's option change.
	EDNS0 *EDNS0Rule
	// Line is the rule's line in the Corefile.
	Line int
}

// RewriteAnswer is a name rule's rewrite of the answer: record names
// (Value false) or record values matching the regex From become To.
type RewriteAnswer struct {
	Value    bool
	From, To string
}

// parseRewrite parses one `rewrite` line (the plugin may be given many;
// their rules apply in file order). A line with fewer than two arguments
// takes its rule from the block that follows, as CoreDNS does.
func parseRewrite(p *blockParser, d *caddyfile.Dispenser) error {
	line := d.Line()
	args := d.RemainingArgs()
	if len(args) < 2 {
		for d.NextBlock() {
			args = append(args, d.Val())
		}
	} else if d.NextBlock() {
		return p.errf(d, "rewrite: a rule with arguments takes no block (found %q)", d.Val())
	}
	r, err := newRewriteRule(args)
	if err != nil {
		return &Error{File: p.opts.Filename, Line: line, Msg: "plugin \"rewrite\": " + err.Error()}
	}
	r.Line = line
	p.server.Rewrite = append(p.server.Rewrite, r)
	return nil
}

// newRewriteRule reads a rule from its words.
func newRewriteRule(args []string) (RewriteRule, error) {
	var r RewriteRule
	if len(args) == 0 {
		return r, fmt.Errorf("no rule type specified")
	}
	switch strings.ToLower(args[0]) {
	case "continue", "stop":
		if len(args) < 2 {
			return r, fmt.Errorf("%s rule must begin with a rule type", strings.ToLower(args[0]))
		}
		r.Continue = strings.ToLower(args[0]) == "continue"
		args = args[1:]
	}
	r.Field = strings.ToLower(args[0])
	args = args[1:]
	switch r.Field {
	case "answer":
		return r, fmt.Errorf("response rewrites must begin with a name rule")
	case "name":
		return r, r.parseName(args)
	case "type", "class":
		return r, r.parseTypeClass(args)
	case "ttl":
		return r, r.parseTTL(args)
	case "rcode":
		return r, r.parseRcode(args)
	case "edns0":
		e, err := parseEDNS0(args)
		r.EDNS0 = e
		return r, err
	case "cname":
		return r, r.parseCNAME(args)
	}
	return r, fmt.Errorf("invalid rule type %q", r.Field)
}

// normName lower-cases and fully qualifies a name (CoreDNS's Normalize).
func normName(s string) string { return strings.ToLower(dns.Fqdn(s)) }

// checkMatch validates a match type.
func checkMatch(field, m string) error {
	switch m {
	case "exact", "prefix", "suffix", "substring", "regex":
		return nil
	}
	return fmt.Errorf("%s rule supports only exact, prefix, suffix, substring, and regex name matching, received: %s", field, m)
}

func (r *RewriteRule) parseName(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("too few arguments for a name rule")
	}
	r.Match = "exact"
	if len(args) == 2 {
		r.From, r.To = normName(args[0]), normName(args[1])
	} else {
		r.Match = strings.ToLower(args[0])
		if err := checkMatch("name", r.Match); err != nil {
			return err
		}
		r.From, r.To = normName(args[1]), normName(args[2])
		if r.Match == "regex" {
			r.From = args[1]
		}
	}
	if len(args) > 3 {
		if err := r.parseAnswers(args[3:]); err != nil {
			return err
		}
	}
	switch r.Match {
	case "exact":
		// CoreDNS checks the names as a pattern and its replacement.
		if err := checkRegex(r.To, r.From); err != nil {
			return err
		}
		r.AnswerAuto = true
	case "regex":
		if err := checkRegex(r.From, args[2]); err != nil {
			return err
		}
	}
	return nil
}

// parseAnswers reads `answer (auto | name FROM TO | value FROM TO)...`;
// `answer` may be left out after the first.
func (r *RewriteRule) parseAnswers(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("invalid arguments for %s rule", r.Match)
	}
	names := 0
	for i, first := 0, true; i < len(args); first = false {
		if args[i] == "answer" {
			i++
		} else if first {
			return fmt.Errorf("exceeded the number of arguments for a non-answer rule argument for %s rule", r.Match)
		}
		if i == len(args) {
			return fmt.Errorf("type missing for answer rule for %s rule", r.Match)
		}
		kind := args[i]
		i++
		switch kind {
		case "auto":
			r.AnswerAuto = true
		case "name", "value":
			if len(args)-i < 2 {
				return fmt.Errorf("%s answer rule for %s rule: 2 arguments required", kind, r.Match)
			}
			if err := checkRegex(args[i], args[i+1]); err != nil {
				return fmt.Errorf("%s answer rule for %s rule: %w", kind, r.Match, err)
			}
			r.Answers = append(r.Answers, RewriteAnswer{Value: kind == "value", From: args[i], To: normName(args[i+1])})
			if kind == "name" {
				names++
			}
			i += 2
		default:
			return fmt.Errorf("invalid type %q for answer rule for %s rule", kind, r.Match)
		}
	}
	if r.AnswerAuto && names > 0 {
		return fmt.Errorf("auto name answer rule cannot be combined with explicit name answer rules")
	}
	return nil
}

// maxRegex bounds a rewrite or template pattern.
const maxRegex = 1024

// checkRegex compiles pattern and checks that replacement uses no more
// groups ({1}, {2}...) than it has.
func checkRegex(pattern, replacement string) error {
	if len(pattern) > maxRegex {
		return fmt.Errorf("regex of %d bytes is longer than %d", len(pattern), maxRegex)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return fmt.Errorf("invalid regex matching pattern: %s", pattern)
	}
	used := 0
	for i := 0; i <= 100; i++ {
		if strings.Contains(replacement, "{"+strconv.Itoa(i)+"}") {
			used++
		}
	}
	if used > re.NumSubexp() {
		return fmt.Errorf("the rewrite regex pattern (%s) uses more subexpressions than its corresponding matching regex pattern (%s)", replacement, pattern)
	}
	return nil
}

func (r *RewriteRule) parseTypeClass(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("%s rules must have exactly two arguments", r.Field)
	}
	table := dns.StringToType
	if r.Field == "class" {
		table = dns.StringToClass
	}
	var ok bool
	if r.FromCode, ok = table[strings.ToUpper(args[0])]; !ok {
		return fmt.Errorf("invalid %s %q", r.Field, strings.ToUpper(args[0]))
	}
	if r.ToCode, ok = table[strings.ToUpper(args[1])]; !ok {
		return fmt.Errorf("invalid %s %q", r.Field, strings.ToUpper(args[1]))
	}
	return nil
}

// matchArgs reads `[MATCH] NAME` of a ttl or rcode rule with n trailing
// values; it returns those values.
func (r *RewriteRule) matchArgs(args []string, n int) ([]string, error) {
	switch len(args) {
	case n + 1:
		r.Match, r.From = "exact", normName(args[0])
	case n + 2:
		r.Match = strings.ToLower(args[0])
		if err := checkMatch(r.Field, r.Match); err != nil {
			return nil, err
		}
		r.From = normName(args[1])
		if r.Match == "regex" {
			r.From = args[1]
			if err := checkRegex(r.From, ""); err != nil {
				return nil, fmt.Errorf("invalid regex pattern in a %s rule: %s", r.Field, args[1])
			}
		}
	default:
		return nil, fmt.Errorf("wrong number of arguments (%d) for a %s rule", len(args), r.Field)
	}
	return args[len(args)-n:], nil
}

func (r *RewriteRule) parseTTL(args []string) error {
	v, err := r.matchArgs(args, 1)
	if err != nil {
		return err
	}
	lo, hi, ok := parseTTLRange(v[0])
	if !ok {
		return fmt.Errorf("invalid TTL '%s' for a ttl rule", v[0])
	}
	r.TTLMin, r.TTLMax = lo, hi
	return nil
}

// parseTTLRange reads SECONDS, MIN-MAX, -MAX or MIN-.
func parseTTLRange(v string) (uint32, uint32, bool) {
	lo, hi, isRange := strings.Cut(v, "-")
	if !isRange {
		n, err := strconv.ParseUint(v, 10, 32)
		return uint32(n), uint32(n), err == nil
	}
	if strings.Contains(hi, "-") || lo == "" && hi == "" {
		return 0, 0, false
	}
	var l, h uint64 = 0, 2147483647
	var err error
	if lo != "" {
		if l, err = strconv.ParseUint(lo, 10, 32); err != nil {
			return 0, 0, false
		}
	}
	if hi != "" {
		if h, err = strconv.ParseUint(hi, 10, 32); err != nil {
			return 0, 0, false
		}
	}
	if l > h {
		return 0, 0, false
	}
	return uint32(l), uint32(h), true
}

func (r *RewriteRule) parseRcode(args []string) error {
	v, err := r.matchArgs(args, 2)
	if err != nil {
		return err
	}
	var ok bool
	if r.RcodeFrom, ok = parseRcodeValue(v[0]); !ok {
		return fmt.Errorf("invalid matching RCODE '%s' for a rcode rule", v[0])
	}
	if r.RcodeTo, ok = parseRcodeValue(v[1]); !ok {
		return fmt.Errorf("invalid replacement RCODE '%s' for a rcode rule", v[1])
	}
	return nil
}

// parseRcodeValue reads an rcode as a number up to 23 or a name.
func parseRcodeValue(v string) (int, bool) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil && n <= 23 {
		return int(n), true
	}
	rc, ok := dns.StringToRcode[strings.ToUpper(v)]
	return rc, ok
}

// parseCNAME reads `[MATCH] FROM TO` of a cname rule (the CNAME target
// rewritten and looked up again).
func (r *RewriteRule) parseCNAME(args []string) error {
	switch len(args) {
	case 2:
		r.Match, r.From, r.To = "exact", strings.ToLower(args[0]), strings.ToLower(args[1])
	case 3:
		r.Match = strings.ToLower(args[0])
		if err := checkMatch("cname", r.Match); err != nil {
			return fmt.Errorf("unknown cname rewrite type: %s", r.Match)
		}
		r.From, r.To = strings.ToLower(args[1]), strings.ToLower(args[2])
		if r.Match == "regex" {
			if err := checkRegex(r.From, ""); err != nil {
				return fmt.Errorf("invalid cname rewrite regex pattern: %w", err)
			}
		}
	default:
		return fmt.Errorf("wrong number of arguments (%d) for a cname rule", len(args))
	}
	return nil
}

// EDNS0Rule is an edns0 rule: `edns0 local|nsid|subnet ACTION ...`.
type EDNS0Rule struct {
	// Type is "local", "nsid" or "subnet"; Action "set", "append",
	// "replace" or "unset".
	Type, Action string
	// Code and Data are a local option's (Data from a hex 0x... string or
	// the text itself); Variable, when set, is the {variable} whose value
	// is the data.
	Code     uint16
	Data     []byte
	Variable string
	// V4Bits and V6Bits are a subnet option's source prefix lengths.
	V4Bits, V6Bits uint8
	// Revert asks for the option to be taken out of the reply again.
	Revert bool
}

// edns0Variables are the variables a local option's data may be.
var edns0Variables = map[string]bool{
	"{qname}": true, "{qtype}": true, "{client_ip}": true, "{client_port}": true, "{protocol}": true,
}

func parseEDNS0(args []string) (*EDNS0Rule, error) {
	if len(args) < 2 {
		return nil, fmt.Errorf("too few arguments for an EDNS0 rule")
	}
	e := &EDNS0Rule{Type: strings.ToLower(args[0]), Action: strings.ToLower(args[1])}
	switch e.Action {
	case "set", "append", "replace":
	case "unset":
		want := map[string]int{"local": 3, "nsid": 2, "subnet": 2}[e.Type]
		if want == 0 {
			return nil, fmt.Errorf("invalid rule type %q", e.Type)
		}
		if len(args) != want {
			return nil, fmt.Errorf("%s unset action requires exactly %d arguments", e.Type, want-1)
		}
		if e.Type == "local" {
			c, err := strconv.ParseUint(args[2], 0, 16)
			if err != nil {
				return nil, fmt.Errorf("EDNS0 local code %q: %w", args[2], err)
			}
			e.Code = uint16(c)
		}
		return e, nil
	default:
		return nil, fmt.Errorf("invalid action: %q", e.Action)
	}
	if args[len(args)-1] == "revert" {
		e.Revert = true
		args = args[:len(args)-1]
	}
	switch e.Type {
	case "local":
		if len(args) != 4 {
			return nil, fmt.Errorf("EDNS0 local rules require three or four args")
		}
		c, err := strconv.ParseUint(args[2], 0, 16)
		if err != nil {
			return nil, fmt.Errorf("EDNS0 local code %q: %w", args[2], err)
		}
		e.Code = uint16(c)
		data := args[3]
		if strings.HasPrefix(data, "{") && strings.HasSuffix(data, "}") {
			switch {
			case edns0Variables[data]:
				e.Variable = data
			case data == "{server_ip}" || data == "{server_port}":
				return nil, fmt.Errorf("EDNS0 variable %s is not supported", data)
			case isMetadataLabel(data[1 : len(data)-1]):
				// A metadata label: without the metadata plugin (node-cache
				// has none) it has no value and the rule never applies, as
				// in CoreDNS.
				e.Variable = data
			default:
				return nil, fmt.Errorf("unsupported variable name %q", data)
			}
			return e, nil
		}
		e.Data = []byte(data)
		if strings.HasPrefix(data, "0x") {
			b, err := hex.DecodeString(data[2:])
			if err != nil {
				return nil, fmt.Errorf("EDNS0 local data %q: %w", data, err)
			}
			e.Data = b
		}
	case "nsid":
		if len(args) != 2 {
			return nil, fmt.Errorf("EDNS0 NSID rules can accept no more than one arg")
		}
	case "subnet":
		if len(args) != 4 {
			return nil, fmt.Errorf("EDNS0 subnet rules require three or four args")
		}
		v4, err := strconv.ParseUint(args[2], 0, 16)
		if err != nil || v4 > 32 {
			return nil, fmt.Errorf("invalid IPv4 bit mask length %s", args[2])
		}
		v6, err := strconv.ParseUint(args[3], 0, 16)
		if err != nil || v6 > 128 {
			return nil, fmt.Errorf("invalid IPv6 bit mask length %s", args[3])
		}
		e.V4Bits, e.V6Bits = uint8(v4), uint8(v6)
	default:
		return nil, fmt.Errorf("invalid rule type %q", e.Type)
	}
	return e, nil
}

// isMetadataLabel is CoreDNS's metadata label syntax: plugin/name.
func isMetadataLabel(l string) bool {
	p, n, ok := strings.Cut(l, "/")
	return ok && p != "" && n != "" && !strings.Contains(n, "/")
}
