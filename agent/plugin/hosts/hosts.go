// Package hosts is CoreDNS's hosts plugin: A, AAAA and PTR answers from a
// hosts file (re-read when it changes) and from lines in the Corefile.
package hosts

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/plugin"
)

// MaxFileSize bounds the hosts file read; a larger file is not loaded
// (the last good content stays).
const MaxFileSize = 64 << 20

// Hosts answers from a hosts file and inline entries.
type Hosts struct {
	cfg     corefile.Hosts
	origins plugin.Zones
	inline  *Map
	file    atomic.Pointer[Map]
	m       *Metrics
	logger  *log.Logger

	// mtime and size of the file last read; used by the reader only.
	mtime time.Time
	size  int64

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// New reads the hosts file (a missing one is empty until it appears) and,
// with a reload interval, starts re-reading it when it changes. Close
// stops that. m may be nil; logger receives read errors (nil: discarded).
func New(cfg corefile.Hosts, m *Metrics, logger *log.Logger) *Hosts {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	h := &Hosts{cfg: cfg, origins: plugin.Zones(cfg.Origins), m: m, logger: logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	h.inline = Parse(strings.NewReader(strings.Join(cfg.Inline, "\n")), h.origins, !cfg.NoReverse)
	h.file.Store(newMap())
	h.read()
	if cfg.Reload > 0 {
		go h.reload()
	} else {
		close(h.done)
	}
	return h
}

// Close stops re-reading the file.
func (h *Hosts) Close() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

func (h *Hosts) reload() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.Reload)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.read()
		}
	}
}

// read loads the file when its size or modification time changed.
func (h *Hosts) read() {
	f, err := os.Open(h.cfg.Path)
	if err != nil {
		return // missing: CoreDNS keeps what it has and serves the inline entries
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		return
	}
	if st.ModTime().Equal(h.mtime) && st.Size() == h.size {
		return
	}
	if st.Size() > MaxFileSize {
		h.logger.Printf("[ERROR] plugin/hosts: %s: %d bytes is larger than %d, not loaded", h.cfg.Path, st.Size(), MaxFileSize)
		return
	}
	fm := Parse(io.LimitReader(f, MaxFileSize), h.origins, !h.cfg.NoReverse)
	h.file.Store(fm)
	h.mtime, h.size = st.ModTime(), st.Size()
	if h.m != nil {
		h.m.entries.WithLabelValues(h.cfg.Path).Set(float64(h.inline.Len() + fm.Len()))
		h.m.reload.Set(float64(st.ModTime().UnixNano()) / 1e9)
	}
}

// ServeDNS answers A, AAAA and PTR queries for names in the entries.
func (h *Hosts) ServeDNS(ctx context.Context, r *plugin.Request, next plugin.Next) (*dns.Msg, error) {
	name := r.Name()
	qtype := r.QType()
	if h.origins.Matches(name) == "" && qtype != dns.TypePTR {
		return next(ctx, r)
	}
	fm := h.file.Load()
	var answers []dns.RR
	switch qtype {
	case dns.TypePTR:
		names := h.lookupAddr(fm, addrFromReverse(name))
		if len(names) == 0 {
			return next(ctx, r)
		}
		for _, n := range names {
			answers = append(answers, &dns.PTR{Hdr: h.hdr(name, dns.TypePTR), Ptr: n})
		}
	case dns.TypeA:
		for _, a := range lookup(fm.name4, h.inline.name4, name) {
			answers = append(answers, &dns.A{Hdr: h.hdr(name, dns.TypeA), A: a.AsSlice()})
		}
	case dns.TypeAAAA:
		for _, a := range lookup(fm.name6, h.inline.name6, name) {
			answers = append(answers, &dns.AAAA{Hdr: h.hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if len(answers) == 0 && !h.exists(fm, name) {
		if plugin.Fall(h.cfg.Fallthrough).Through(name) {
			return next(ctx, r)
		}
		// CoreDNS answers SERVFAIL: without an SOA it cannot say NXDOMAIN.
		return nil, plugin.Fail(dns.RcodeServerFailure, nil)
	}
	m := plugin.Reply(r.Msg)
	m.Answer = answers
	r.Writer = "hosts"
	return m, nil
}

func (h *Hosts) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: h.cfg.TTL}
}

// exists reports whether name has an address of either family.
func (h *Hosts) exists(fm *Map, name string) bool {
	return len(fm.name4[name]) > 0 || len(h.inline.name4[name]) > 0 || len(fm.name6[name]) > 0 || len(h.inline.name6[name]) > 0
}

// lookup returns the file's addresses of name, then the inline ones.
func lookup(file, inline map[string][]netip.Addr, name string) []netip.Addr {
	return append(append([]netip.Addr(nil), file[name]...), inline[name]...)
}

func (h *Hosts) lookupAddr(fm *Map, a netip.Addr) []string {
	if !a.IsValid() {
		return nil
	}
	return append(append([]string(nil), fm.addr[a]...), h.inline.addr[a]...)
}

// addrFromReverse is the address of an in-addr.arpa or ip6.arpa name, or
// the zero Addr.
func addrFromReverse(name string) netip.Addr {
	if s, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		l := strings.Split(s, ".")
		for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
			l[i], l[j] = l[j], l[i]
		}
		a, err := netip.ParseAddr(strings.Join(l, "."))
		if err != nil || !a.Is4() {
			return netip.Addr{}
		}
		return a
	}
	if s, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		l := strings.Split(s, ".")
		if len(l) != 32 {
			return netip.Addr{}
		}
		var b strings.Builder
		for i, v := range slices.Backward(l) {
			if len(v) != 1 {
				return netip.Addr{}
			}
			b.WriteString(v)
			if i%4 == 0 && i > 0 {
				b.WriteByte(':')
			}
		}
		a, err := netip.ParseAddr(b.String())
		if err != nil {
			return netip.Addr{}
		}
		return a.Unmap()
	}
	return netip.Addr{}
}

// String describes the plugin for logs.
func (h *Hosts) String() string { return fmt.Sprintf("hosts %s %v", h.cfg.Path, h.cfg.Origins) }
