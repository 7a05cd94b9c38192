package server

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

// LogRule is a compiled rule of the log plugin: queries for names in Name
// whose answer's class is in classes (all when 0) are logged with format.
type LogRule struct {
	Name    string
	classes uint8
	format  []logNode
}

// Classes of answers, as the log plugin's `class`.
const (
	classSuccess uint8 = 1 << iota
	classDenial
	classError
)

// logNode is a literal or a placeholder ({name}, {>id}, ...) of a format.
type logNode struct {
	text        string
	placeholder bool
}

// defaultLogRules logs every query in the common format.
var defaultLogRules = NewLogRules([]corefile.LogRule{{Name: ".", Format: corefile.CommonLogFormat}})

// NewLogRules compiles the log plugin's rules.
func NewLogRules(rules []corefile.LogRule) []LogRule {
	out := make([]LogRule, 0, len(rules))
	for _, r := range rules {
		lr := LogRule{Name: dns.CanonicalName(r.Name), format: parseLogFormat(r.Format)}
		for _, c := range r.Classes {
			switch c {
			case "success":
				lr.classes |= classSuccess
			case "denial":
				lr.classes |= classDenial
			case "error":
				lr.classes |= classError
			}
		}
		out = append(out, lr)
	}
	return out
}

// parseLogFormat splits a format into literals and the placeholders the
// agent knows ({/LABEL} metadata included); anything else between braces
// stays literal, as CoreDNS's replacer does.
func parseLogFormat(f string) []logNode {
	var nodes []logNode
	lit := func(s string) {
		if s == "" {
			return
		}
		if n := len(nodes); n > 0 && !nodes[n-1].placeholder {
			nodes[n-1].text += s
			return
		}
		nodes = append(nodes, logNode{text: s})
	}
	for {
		j := strings.IndexByte(f, '}')
		if j < 0 {
			break
		}
		i := strings.LastIndexByte(f[:j], '{')
		if i < 0 {
			lit(f[:j+1])
			f = f[j+1:]
			continue
		}
		val := f[i : j+1]
		if logPlaceholders[val] || strings.HasPrefix(val, "{/") {
			lit(f[:i])
			nodes = append(nodes, logNode{text: val, placeholder: true})
		} else {
			lit(f[:j+1])
		}
		f = f[j+1:]
	}
	lit(f)
	return nodes
}

var logPlaceholders = map[string]bool{
	"{type}": true, "{name}": true, "{class}": true, "{proto}": true, "{remote}": true, "{size}": true,
	"{port}": true, "{duration}": true, "{rcode}": true, "{rsize}": true, "{>rflags}": true,
	"{>bufsize}": true, "{>do}": true, "{>id}": true, "{>opcode}": true,
}

// logQuery writes the log plugin's line for one query: the first rule of
// b whose name contains the question's logs it, when the class of the
// answer is one it wants. out is the reply as sent (nil when dropped).
func (s *Server) logQuery(b *Block, client netip.AddrPort, req, resp *dns.Msg, out []byte, tcp bool, size int, d time.Duration) {
	rules := b.LogRules
	if rules == nil {
		rules = defaultLogRules
	}
	name := strings.ToLower(req.Question[0].Name)
	for i := range rules {
		r := &rules[i]
		if !dns.IsSubDomain(r.Name, name) {
			continue
		}
		if r.classes != 0 && r.classes&answerClass(resp) == 0 {
			return
		}
		e := logEntry{client: client, req: req, rcode: resp.Rcode, out: out, tcp: tcp, size: size, d: d, name: name}
		var sb strings.Builder
		sb.WriteString("[INFO] ")
		for _, n := range r.format {
			if n.placeholder {
				sb.WriteString(e.value(n.text))
			} else {
				sb.WriteString(n.text)
			}
		}
		s.opts.Logger.Print(sb.String())
		return
	}
}

// answerClass is the log plugin's class of an answer: NXDOMAIN and
// NODATA are denial, other NOERROR answers (referrals too) success, any
// other rcode error.
func answerClass(m *dns.Msg) uint8 {
	switch m.Rcode {
	case dns.RcodeNameError:
		return classDenial
	case dns.RcodeSuccess:
		if len(m.Answer) > 0 {
			return classSuccess
		}
		for _, rr := range m.Ns {
			if rr.Header().Rrtype == dns.TypeSOA {
				return classDenial
			}
		}
		if len(m.Ns) > 0 {
			return classSuccess // a referral
		}
		return classDenial
	}
	return classError
}

// logEntry holds what the placeholders of one log line are made of.
type logEntry struct {
	client netip.AddrPort
	req    *dns.Msg
	rcode  int
	out    []byte
	tcp    bool
	size   int
	d      time.Duration
	name   string
}

func (e *logEntry) value(p string) string {
	q := e.req.Question[0]
	switch p {
	case "{type}":
		return dns.Type(q.Qtype).String()
	case "{name}":
		return e.name
	case "{class}":
		return dns.Class(q.Qclass).String()
	case "{proto}":
		if e.tcp {
			return "tcp"
		}
		return "udp"
	case "{remote}":
		if a := e.client.Addr(); a.Is6() && !a.Is4In6() {
			return "[" + a.String() + "]"
		}
		return e.client.Addr().Unmap().String()
	case "{port}":
		return strconv.Itoa(int(e.client.Port()))
	case "{size}":
		return strconv.Itoa(e.size)
	case "{duration}":
		return strconv.FormatFloat(e.d.Seconds(), 'f', -1, 64) + "s"
	case "{rcode}":
		if s, ok := dns.RcodeToString[e.rcode]; ok {
			return s
		}
		return strconv.Itoa(e.rcode)
	case "{rsize}":
		return strconv.Itoa(len(e.out))
	case "{>rflags}":
		var flags uint16
		if len(e.out) >= dnswire.HeaderLen {
			flags = dnswire.Flags(e.out)
		}
		return flagString(flags)
	case "{>bufsize}":
		if opt := e.req.IsEdns0(); opt != nil {
			return strconv.Itoa(int(opt.UDPSize()))
		}
		return strconv.Itoa(dnswire.MinUDPSize)
	case "{>do}":
		opt := e.req.IsEdns0()
		return strconv.FormatBool(opt != nil && opt.Do())
	case "{>id}":
		return strconv.Itoa(int(e.req.Id))
	case "{>opcode}":
		return strconv.Itoa(e.req.Opcode)
	}
	return "-" // {/LABEL}: there is no metadata plugin
}

// flagString lists the header flags set in flags as CoreDNS's {>rflags}.
func flagString(flags uint16) string {
	names := [...]struct {
		bit  uint16
		name string
	}{{dnswire.FlagQR, "qr"}, {dnswire.FlagAA, "aa"}, {dnswire.FlagTC, "tc"}, {dnswire.FlagRD, "rd"},
		{dnswire.FlagRA, "ra"}, {0x0040, "z"}, {dnswire.FlagAD, "ad"}, {dnswire.FlagCD, "cd"}}
	var f []string
	for _, n := range names {
		if flags&n.bit != 0 {
			f = append(f, n.name)
		}
	}
	return strings.Join(f, ",")
}
