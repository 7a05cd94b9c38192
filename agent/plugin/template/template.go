// Package template is CoreDNS's template plugin: replies made from Go
// templates for the query names that match regular expressions.
package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin/gotemplate"
)

// maxRecordText bounds the text one record template may produce.
const maxRecordText = 64 << 10

// Handler answers from a block's templates.
type Handler struct {
	zones     plugin.Zones // every template's zones
	templates []*tmpl
	m         *Metrics
}

type tmpl struct {
	cfg                           corefile.Template
	zones                         plugin.Zones
	regex                         []*regexp.Regexp
	answer, additional, authority []*gotemplate.Program
}

// New compiles the templates; m may be nil.
func New(cfgs []corefile.Template, m *Metrics) (*Handler, error) {
	h := &Handler{m: m}
	for _, c := range cfgs {
		t := &tmpl{cfg: c, zones: plugin.Zones(c.Zones)}
		h.zones = append(h.zones, c.Zones...)
		for _, s := range c.Match {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("template at line %d: %w", c.Line, err)
			}
			t.regex = append(t.regex, re)
		}
		for _, sec := range []struct {
			name string
			src  []string
			dst  *[]*gotemplate.Program
		}{{"answer", c.Answer, &t.answer}, {"additional", c.Additional, &t.additional}, {"authority", c.Authority, &t.authority}} {
			for _, text := range sec.src {
				gt, err := gotemplate.Compile(sec.name, text)
				if err != nil {
					return nil, fmt.Errorf("template at line %d: %w", c.Line, err)
				}
				*sec.dst = append(*sec.dst, gt)
			}
		}
		h.templates = append(h.templates, t)
	}
	return h, nil
}

// ServeDNS answers from the first template whose zone, class, type and a
// regex match the query.
func (h *Handler) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	name := r.Name()
	if h.zones.Matches(name) == "" {
		return next(ctx, r)
	}
	for _, t := range h.templates {
		d, match, fall := t.match(r, name)
		if !match {
			if !fall {
				return nil, plugin.Fail(dns.RcodeServerFailure, nil)
			}
			continue
		}
		if h.m != nil {
			h.m.matches.WithLabelValues(r.Server, d.Zone, "", d.Class, d.Type).Inc()
		}
		if t.cfg.Rcode == dns.RcodeServerFailure {
			return nil, plugin.Fail(dns.RcodeServerFailure, nil)
		}
		m := plugin.Reply(r.Msg)
		m.Rcode = t.cfg.Rcode
		for _, gt := range t.answer {
			rr, err := h.execute(r, "answer", gt, d)
			if err != nil {
				return nil, plugin.Fail(dns.RcodeServerFailure, err)
			}
			m.Answer = append(m.Answer, rr)
			qt := r.QType()
			if cname, ok := rr.(*dns.CNAME); ok && (qt == dns.TypeA || qt == dns.TypeAAAA) && r.Lookup != nil {
				if up, err := r.Lookup(ctx, cname.Target, qt); err == nil && up != nil {
					m.Truncated = up.Truncated
					m.Answer = append(m.Answer, up.Answer...)
				}
			}
		}
		for _, gt := range t.additional {
			rr, err := h.execute(r, "additional", gt, d)
			if err != nil {
				return nil, plugin.Fail(dns.RcodeServerFailure, err)
			}
			m.Extra = append(m.Extra, rr)
		}
		for _, gt := range t.authority {
			rr, err := h.execute(r, "authority", gt, d)
			if err != nil {
				return nil, plugin.Fail(dns.RcodeServerFailure, err)
			}
			m.Ns = append(m.Ns, rr)
		}
		if e := t.cfg.EDE; e != nil {
			m.SetEdns0(4096, true)
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: e.Code, ExtraText: e.Reason})
		}
		r.Writer = "template"
		return m, nil
	}
	return next(ctx, r)
}

// match returns the template data when t answers the query; otherwise
// fall says whether the next template (or plugin) may.
func (t *tmpl) match(r *plugin.Request, name string) (d *gotemplate.Data, match, fall bool) {
	q := r.Msg.Question[0]
	zone := t.zones.Matches(name)
	if zone == "" {
		return nil, false, true
	}
	if t.cfg.Class != dns.ClassANY && q.Qclass != dns.ClassANY && q.Qclass != t.cfg.Class {
		return nil, false, true
	}
	if t.cfg.Type != dns.TypeANY && q.Qtype != dns.TypeANY && q.Qtype != t.cfg.Type {
		return nil, false, true
	}
	for _, re := range t.regex {
		groups := re.FindStringSubmatch(name)
		if groups == nil {
			continue
		}
		d := &gotemplate.Data{Zone: zone, Name: name, Regex: re.String(), Question: &q, Message: r.Msg,
			Remote: r.Client.Addr().Unmap().String(), Match: groups, Group: map[string]string{}}
		d.Class = dns.ClassToString[q.Qclass]
		if q.Qclass == dns.ClassANY {
			d.Class = dns.ClassToString[t.cfg.Class]
		}
		d.Type = dns.TypeToString[q.Qtype]
		if q.Qtype == dns.TypeANY {
			d.Type = dns.TypeToString[t.cfg.Type]
		}
		names := re.SubexpNames()
		for i, g := range groups {
			d.Group[strconv.Itoa(i)] = g
		}
		for i, g := range groups {
			if names[i] != "" {
				d.Group[names[i]] = g
			}
		}
		return d, true, false
	}
	return nil, false, plugin.Fall(t.cfg.Fallthrough).Through(name)
}

// errTooLong is a template that wrote more than maxRecordText.
var errTooLong = errors.New("template output too long")

// limitedBuffer is a bytes.Buffer that refuses to grow past maxRecordText.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxRecordText {
		return 0, errTooLong
	}
	return b.Buffer.Write(p)
}

// execute renders one record, counting failures as CoreDNS does.
func (h *Handler) execute(r *plugin.Request, section string, gt *gotemplate.Program, d *gotemplate.Data) (dns.RR, error) {
	var buf limitedBuffer
	if err := gt.Execute(&buf, d); err != nil {
		if h.m != nil {
			h.m.failures.WithLabelValues(r.Server, d.Zone, "", d.Class, d.Type, section, gt.String()).Inc()
		}
		return nil, err
	}
	rr, err := dns.NewRR(buf.String())
	if err == nil && rr == nil {
		err = errors.New("template made no record")
	}
	if err != nil {
		if h.m != nil {
			h.m.rrFailures.WithLabelValues(r.Server, d.Zone, "", d.Class, d.Type, section, gt.String()).Inc()
		}
		return nil, err
	}
	return rr, nil
}
