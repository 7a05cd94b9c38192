package server

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/dnswire"
)

// logQuery writes one line per query in the default format of CoreDNS's
// log plugin:
//
//	[INFO] {remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}
//
// out is the reply as sent (nil when it was dropped).
func (s *Server) logQuery(client netip.AddrPort, req *dns.Msg, rcode int, out []byte, tcp bool, size int, d time.Duration) {
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	do, bufsize := false, dnswire.MinUDPSize
	if opt := req.IsEdns0(); opt != nil {
		do, bufsize = opt.Do(), int(opt.UDPSize())
	}
	var flags uint16
	if len(out) >= dnswire.HeaderLen {
		flags = dnswire.Flags(out)
	}
	q := req.Question[0]
	s.opts.Logger.Printf("[INFO] %s - %d \"%s %s %s %s %d %t %d\" %s %s %d %ss", client, req.Id,
		dns.TypeToString[q.Qtype], dns.ClassToString[q.Qclass], strings.ToLower(q.Name), proto, size, do, bufsize,
		dns.RcodeToString[rcode], flagString(flags), len(out), strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
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
