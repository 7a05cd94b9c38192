// Package rewrite is CoreDNS's rewrite plugin: rules that change the
// question of a query (name, type, class) before the plugins after it see
// it, and the reply on its way back (the question restored, record names
// and values, TTLs, the rcode).
package rewrite

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// Rewrite applies a block's rewrite rules in order.
type Rewrite struct {
	rules []*rule
}

// rule is one compiled rule.
type rule struct {
	cfg corefile.RewriteRule
	re  *regexp.Regexp // the name matched, for regex rules
	// static are the reply rewrites a matching name rule always adds.
	static []respRule
}

// respRule rewrites one record of a reply (or the reply's rcode).
type respRule interface {
	apply(m *dns.Msg, rr dns.RR)
}

// New compiles the rules.
func New(rules []corefile.RewriteRule) (*Rewrite, error) {
	rw := &Rewrite{}
	for _, c := range rules {
		r := &rule{cfg: c}
		if c.Match == "regex" {
			re, err := regexp.Compile(c.From)
			if err != nil {
				return nil, fmt.Errorf("rewrite at line %d: %w", c.Line, err)
			}
			r.re = re
		}
		if c.Field == "name" {
			if c.Match == "suffix" && c.AnswerAuto {
				// A suffix rule's auto reply rewrite swaps its suffixes.
				sr := suffixRewriter{suffix: c.To, replacement: c.From}
				r.static = append(r.static, nameRule{sr}, valueRule{sr})
			}
			for _, a := range c.Answers {
				re, err := regexp.Compile(a.From)
				if err != nil {
					return nil, fmt.Errorf("rewrite at line %d: %w", c.Line, err)
				}
				rx := regexRewriter{re: re, replacement: a.To}
				if a.Value {
					r.static = append(r.static, valueRule{rx})
				} else {
					r.static = append(r.static, nameRule{rx})
				}
			}
		}
		rw.rules = append(rw.rules, r)
	}
	return rw, nil
}

// ServeDNS applies the rules to the question, lets the rest of the chain
// answer, and rewrites the reply.
func (rw *Rewrite) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	orig := r.Msg.Question[0]
	var resp []respRule
	for _, rl := range rw.rules {
		rules, done := rl.rewrite(ctx, r)
		if !done {
			continue
		}
		if _, ok := dns.IsDomainName(r.Msg.Question[0].Name); !ok {
			err := fmt.Errorf("invalid name after rewrite: %s", r.Msg.Question[0].Name)
			r.Msg.Question[0] = orig
			return nil, plugin.Fail(dns.RcodeServerFailure, err)
		}
		resp = append(resp, rules...)
		if rl.cfg.Continue {
			continue
		}
		m, err := next(ctx, r)
		if err != nil {
			rc := plugin.Rcode(err)
			if !clientWrites(rc) {
				// CoreDNS's rewrite writes the error reply itself then, so
				// that its question is restored: it becomes a reply.
				m = new(dns.Msg)
				m.SetRcode(r.Msg, rc)
				err = nil
			}
		}
		if err != nil {
			return nil, err
		}
		return rw.revert(r, m, orig, resp), nil
	}
	if len(resp) == 0 {
		return next(ctx, r)
	}
	m, err := next(ctx, r)
	if err != nil {
		return nil, err
	}
	return rw.revert(r, m, orig, resp), nil
}

// clientWrites is CoreDNS's plugin.ClientWrite: whether a plugin that
// returned rcode has written a reply.
func clientWrites(rcode int) bool {
	switch rcode {
	case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeFormatError, dns.RcodeNotImplemented:
		return false
	}
	return true
}

// revert restores the question of m and applies the reply rules to every
// record, last rule first. CoreDNS's reply to a query with EDNS0 carries
// an OPT record, which the rules see as one more record (an rcode rule
// applies once per record); the agent writes its own OPT record, so the
// rules only count it.
func (rw *Rewrite) revert(r *plugin.Request, m *dns.Msg, orig dns.Question, rules []respRule) *dns.Msg {
	if len(m.Question) > 0 {
		m.Question[0] = orig
	} else {
		m.Question = []dns.Question{orig}
	}
	r.Writer = "rewrite"
	if len(rules) == 0 {
		return m
	}
	each := func(rr dns.RR) {
		for _, rule := range slices.Backward(rules) {
			rule.apply(m, rr)
		}
	}
	opt := false
	for _, s := range [][]dns.RR{m.Ns, m.Answer, m.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeOPT {
				opt = true
				continue
			}
			each(rr)
		}
	}
	if opt || r.Msg.IsEdns0() != nil {
		each(&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}})
	}
	return m
}

// rewrite applies the rule to r's question; done reports a match, rules
// the reply rewrites it asks for.
func (rl *rule) rewrite(ctx context.Context, r *plugin.Request) (rules []respRule, done bool) {
	c := &rl.cfg
	q := &r.Msg.Question[0]
	name := r.Name()
	switch c.Field {
	case "cname":
		// Always a match, as in CoreDNS: the reply's CNAME records decide.
		return []respRule{cnameRule{rl: rl, ctx: ctx, r: r}}, true
	case "edns0":
		return nil, rl.edns0(r)
	case "type":
		if q.Qtype == c.FromCode {
			q.Qtype = c.ToCode
			return nil, true
		}
		return nil, false
	case "class":
		if q.Qclass == c.FromCode {
			q.Qclass = c.ToCode
			return nil, true
		}
		return nil, false
	case "ttl":
		if rl.matches(name) {
			return []respRule{ttlRule{lo: c.TTLMin, hi: c.TTLMax}}, true
		}
		return nil, false
	case "rcode":
		if rl.matches(name) {
			return []respRule{rcodeRule{from: c.RcodeFrom, to: c.RcodeTo}}, true
		}
		return nil, false
	}
	// A name rule.
	var newName string
	switch c.Match {
	case "exact":
		if name != c.From {
			return nil, false
		}
		newName = c.To
	case "prefix":
		after, ok := strings.CutPrefix(name, c.From)
		if !ok {
			return nil, false
		}
		newName = c.To + after
	case "suffix":
		before, ok := strings.CutSuffix(name, c.From)
		if !ok {
			return nil, false
		}
		newName = before + c.To
	case "substring":
		if !strings.Contains(name, c.From) {
			return nil, false
		}
		newName = strings.ReplaceAll(name, c.From, c.To)
	case "regex":
		groups := rl.re.FindStringSubmatch(name)
		if len(groups) == 0 {
			return nil, false
		}
		newName = substitute(c.To, groups)
	default:
		return nil, false
	}
	q.Name = newName
	// Exact rules always rewrite the reply back; suffix rules did it with
	// their static rules.
	if c.AnswerAuto && c.Match != "suffix" {
		rr := remapRewriter{orig: newName, replacement: name}
		return append([]respRule{nameRule{rr}, valueRule{rr}}, rl.static...), true
	}
	return rl.static, true
}

// matches reports whether a ttl or rcode rule matches name.
func (rl *rule) matches(name string) bool {
	c := &rl.cfg
	switch c.Match {
	case "exact":
		return name == c.From
	case "prefix":
		return strings.HasPrefix(name, c.From)
	case "suffix":
		return strings.HasSuffix(name, c.From)
	case "substring":
		return strings.Contains(name, c.From)
	case "regex":
		return rl.re.MatchString(name)
	}
	return false
}

// substitute replaces {0}, {1}... in s by the regex groups.
func substitute(s string, groups []string) string {
	for i, g := range groups {
		s = strings.ReplaceAll(s, "{"+strconv.Itoa(i)+"}", g)
	}
	return s
}
