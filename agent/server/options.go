package server

import (
	"fmt"
	"log"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// capBufSize lowers the EDNS0 UDP size of req to the bufsize plugin's
// size (bufSize > 0), as CoreDNS's bufsize does before the other plugins
// see the query: the reply is truncated to it.
func capBufSize(req *dns.Msg, bufSize int) {
	if bufSize <= 0 {
		return
	}
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > bufSize {
		opt.SetUDPSize(uint16(bufSize))
	}
}

// udpLimit is the size a UDP reply is truncated to: the client's, capped by
// the bufsize plugin's (0: no cap). It does not allocate.
func udpLimit(client, bufSize int) int {
	if bufSize > 0 && client > bufSize {
		return bufSize
	}
	return client
}

// refreshStale asks the upstream again for an expired entry served by
// serve_stale's immediate mode, behind the answer (as a prefetch).
func (s *Server) refreshStale(rt *route, req *dns.Msg) {
	wire, err := req.Pack()
	if err != nil {
		return
	}
	s.prefetch(wire, rt)
}

// reportError is the errors plugin's line for a query whose forwarding
// failed, through the block's consolidation rules when it has some.
func (s *Server) reportError(b *Block, req *dns.Msg, err error) {
	q := req.Question[0]
	if b.ErrorLog != nil && b.ErrorLog.consolidated(err.Error()) {
		return
	}
	s.opts.Logger.Printf("[ERROR] plugin/forward: %s %s: %v", q.Name, dns.TypeToString[q.Qtype], err)
}

// debugDump logs a query whose forwarding failed as a hex dump in
// CoreDNS's debug format (text2pcap reads it back).
func (s *Server) debugDump(req *dns.Msg, err error) {
	wire, perr := req.Pack()
	if perr != nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[DEBUG] plugin/forward: %s: %v\n", req.Question[0].Name, err)
	b.WriteString(hexdump(wire))
	s.opts.Logger.Print(b.String())
}

// hexdump formats data as lines of "debug: OFFSET XX XX ..." (16 bytes a
// line) and a last line with the length, like CoreDNS's debug package.
func hexdump(data []byte) string {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		fmt.Fprintf(&b, "debug: %06x", off)
		for _, c := range data[off:min(off+16, len(data))] {
			fmt.Fprintf(&b, " %02x", c)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "debug: %06x", len(data))
	return b.String()
}

// ErrorLog consolidates the errors plugin's messages: the first
// consolidate rule whose pattern matches an error counts it, and once its
// duration after the first match has passed one line reports the count.
type ErrorLog struct {
	logger *log.Logger
	rules  []*errorRule
}

type errorRule struct {
	corefile.ErrorRule
	re *regexp.Regexp

	mu    sync.Mutex
	count int
}

// NewErrorLog compiles the consolidate rules; lines go to logger.
func NewErrorLog(logger *log.Logger, rules []corefile.ErrorRule) (*ErrorLog, error) {
	l := &ErrorLog{logger: logger}
	for _, r := range rules {
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("errors consolidate %q: %w", r.Pattern, err)
		}
		l.rules = append(l.rules, &errorRule{ErrorRule: r, re: re})
	}
	return l, nil
}

// consolidated counts msg in the first rule that matches it and reports
// whether one did.
func (l *ErrorLog) consolidated(msg string) bool {
	for _, r := range l.rules {
		if !r.re.MatchString(msg) {
			continue
		}
		r.mu.Lock()
		r.count++
		first := r.count == 1
		r.mu.Unlock()
		if first {
			time.AfterFunc(r.Duration, func() { l.flush(r) })
		}
		return true
	}
	return false
}

func (l *ErrorLog) flush(r *errorRule) {
	r.mu.Lock()
	n := r.count
	r.count = 0
	r.mu.Unlock()
	l.logger.Printf("[%s] plugin/errors: %d errors like '%s' occurred in last %s", strings.ToUpper(r.Level), n, r.Pattern, r.Duration)
}

// SetTCPTimeouts applies the timeouts plugin's TCP timeouts to every
// listener, for the connections accepted from now on and the next reads
// and writes of open ones; nil restores the defaults.
func (s *Server) SetTCPTimeouts(t *corefile.Timeouts) { s.timeouts.Store(t) }

// readTimeout bounds the wait for a query on a TCP connection: `read` for
// the first one, `idle` between queries, as CoreDNS's server.
func (s *Server) readTimeout(first bool) time.Duration {
	if t := s.timeouts.Load(); t != nil {
		if first && t.Read > 0 {
			return t.Read
		}
		if t.Idle > 0 {
			return t.Idle
		}
	}
	return s.opts.TCPIdleTimeout
}

// writeTimeout bounds writing one answer on a TCP connection.
func (s *Server) writeTimeout() time.Duration {
	if t := s.timeouts.Load(); t != nil && t.Write > 0 {
		return t.Write
	}
	return TCPWriteTimeout
}
