package rewrite

import (
	"context"
	"regexp"
	"strings"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// stringRewriter maps a name to another.
type stringRewriter interface {
	rewrite(s string) string
}

// regexRewriter replaces a name matching re by replacement with its groups.
type regexRewriter struct {
	re          *regexp.Regexp
	replacement string
}

func (r regexRewriter) rewrite(s string) string {
	groups := r.re.FindStringSubmatch(s)
	if len(groups) == 0 {
		return s
	}
	return substitute(r.replacement, groups)
}

// remapRewriter maps orig, and the names under it, back to replacement.
type remapRewriter struct{ orig, replacement string }

func (r remapRewriter) rewrite(s string) string {
	if s == r.orig {
		return r.replacement
	}
	if strings.HasSuffix(s, "."+r.orig) {
		return s[:len(s)-len(r.orig)] + r.replacement
	}
	return s
}

// suffixRewriter replaces a suffix.
type suffixRewriter struct{ suffix, replacement string }

func (r suffixRewriter) rewrite(s string) string {
	if before, ok := strings.CutSuffix(s, r.suffix); ok {
		return before + r.replacement
	}
	return s
}

// nameRule rewrites the owner name of a record.
type nameRule struct{ stringRewriter }

func (r nameRule) apply(_ *dns.Msg, rr dns.RR) { rr.Header().Name = r.rewrite(rr.Header().Name) }

// valueRule rewrites the name a record points to (CNAME, DNAME, SRV, MX,
// NS, PTR, NAPTR, SOA's primary server).
type valueRule struct{ stringRewriter }

func (r valueRule) apply(_ *dns.Msg, rr dns.RR) {
	var p *string
	switch v := rr.(type) {
	case *dns.SRV:
		p = &v.Target
	case *dns.MX:
		p = &v.Mx
	case *dns.CNAME:
		p = &v.Target
	case *dns.NS:
		p = &v.Ns
	case *dns.DNAME:
		p = &v.Target
	case *dns.NAPTR:
		p = &v.Replacement
	case *dns.SOA:
		p = &v.Ns
	case *dns.PTR:
		p = &v.Ptr
	default:
		return
	}
	if *p != "" {
		*p = r.rewrite(*p)
	}
}

// ttlRule keeps TTLs within [lo, hi].
type ttlRule struct{ lo, hi uint32 }

func (r ttlRule) apply(_ *dns.Msg, rr dns.RR) {
	h := rr.Header()
	if h.Ttl < r.lo {
		h.Ttl = r.lo
	} else if h.Ttl > r.hi {
		h.Ttl = r.hi
	}
}

// rcodeRule changes the reply's rcode from one value to another.
type rcodeRule struct{ from, to int }

func (r rcodeRule) apply(m *dns.Msg, _ dns.RR) {
	if m.Rcode == r.from {
		m.Rcode = r.to
	}
}

// cnameRule rewrites the target of a CNAME record of the reply and
// replaces the answer by the CNAME records (all of them pointing to the new
// target, as CoreDNS does) and the new target's records, looked up through
// the server with the query's type.
type cnameRule struct {
	rl  *rule
	ctx context.Context
	r   *plugin.Request
}

func (c cnameRule) apply(m *dns.Msg, rr dns.RR) {
	cn, ok := rr.(*dns.CNAME)
	if !ok {
		return
	}
	from, to := c.rl.cnameTargets(cn.Target)
	if from == "" || cn.Target != from || c.r.Lookup == nil {
		return
	}
	up, err := c.r.Lookup(c.ctx, to, c.r.Msg.Question[0].Qtype)
	if err != nil || up == nil {
		return
	}
	var answer []dns.RR
	for _, a := range m.Answer {
		if x, ok := a.(*dns.CNAME); ok {
			x.Target = to
			answer = append(answer, a)
		}
	}
	for _, a := range up.Answer {
		if a.Header().Name == to {
			answer = append(answer, a)
		}
	}
	m.Answer = answer
	m.Truncated = up.Truncated
}

// cnameTargets returns the target a cname rule matches in target (exact
// rules: their FROM whatever the target) and its replacement, or "".
func (rl *rule) cnameTargets(target string) (from, to string) {
	c := &rl.cfg
	switch c.Match {
	case "exact":
		return c.From, c.To
	case "prefix":
		if after, ok := strings.CutPrefix(target, c.From); ok {
			return target, c.To + after
		}
	case "suffix":
		if before, ok := strings.CutSuffix(target, c.From); ok {
			return target, before + c.To
		}
	case "substring":
		if strings.Contains(target, c.From) {
			return target, strings.ReplaceAll(target, c.From, c.To)
		}
	case "regex":
		if groups := rl.re.FindStringSubmatch(target); groups != nil {
			return target, substitute(c.To, groups)
		}
	}
	return "", ""
}
