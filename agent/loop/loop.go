// Package loop detects forwarding loops at start, as CoreDNS's loop plugin
// does: a random `<n>.<n>.<zone> HINFO` query is sent upstream through the
// block's forwarder; if that query comes back in to the agent, the upstream
// (directly or through other resolvers) forwards to the agent itself, e.g.
// a node whose /etc/resolv.conf names the agent's own address. That is a
// fatal configuration error.
//
// CoreDNS sends its probe to its own listener, so it sees it once anyway and
// reports a loop when it sees it more than twice. Here the probe leaves
// through the forwarder directly, so any sighting means the query looped.
package loop

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/forward"
)

// DefaultTimeout bounds one Check when its context has no deadline.
const DefaultTimeout = 2 * time.Second

// Error is the fatal error Check returns when the probe came back.
type Error struct {
	Zone      string
	Query     string
	Upstreams []string
	Seen      int
}

// Error names the zone, the probe and the upstreams, and says what to fix.
func (e *Error) Error() string {
	return fmt.Sprintf("loop detected for zone %q: the probe query %q forwarded to %s came back to this agent %d time(s); "+
		"an upstream forwards to the agent itself (is the agent's own address in the node's /etc/resolv.conf or the kube-dns upstreamNameservers?)",
		e.Zone, e.Query, strings.Join(e.Upstreams, ","), e.Seen)
}

// Probe is the loop detection of one server block. It wraps the block's
// forwarder: the server uses the Probe as its Exchanger, so every cache
// miss passes Observe, and the probe query is answered with an error
// instead of being forwarded again.
type Probe struct {
	zone  string
	name  string // lower-case FQDN of the probe
	query string // "name HINFO", for messages
	fwd   *forward.Forwarder
	// Chain, when set, forwards the block's queries instead of fwd (a
	// block with several forward plugins); the probe still goes to fwd.
	Chain *forward.Chain
	seen  atomic.Int64
}

// New returns the Probe for a block serving zone and forwarding with fwd.
func New(zone string, fwd *forward.Forwarder) *Probe {
	zone = dns.CanonicalName(zone)
	name := strconv.FormatUint(rand.Uint64(), 10) + "." + strconv.FormatUint(rand.Uint64(), 10) + "."
	if zone != "." {
		name += zone
	}
	return &Probe{zone: zone, name: name, query: name + " HINFO", fwd: fwd}
}

// Name returns the probe's query name (lower-case FQDN).
func (p *Probe) Name() string { return p.name }

// Seen returns how many times the probe came back in.
func (p *Probe) Seen() int { return int(p.seen.Load()) }

// Observe reports whether a query for qname is the probe coming back, and
// counts it. The caller must not forward such a query.
func (p *Probe) Observe(qname string) bool {
	if len(qname) != len(p.name) || !strings.EqualFold(qname, p.name) {
		return false
	}
	p.seen.Add(1)
	return true
}

// errLooped is what the server sees for the looped probe: it answers
// SERVFAIL and stops the loop there.
var errLooped = errors.New("loop: probe query came back; not forwarding it again")

// Exchange forwards m, unless it is the probe coming back.
func (p *Probe) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(m.Question) == 1 && m.Question[0].Qtype == dns.TypeHINFO && p.Observe(m.Question[0].Name) {
		return nil, errLooped
	}
	if p.Chain != nil {
		return p.Chain.Exchange(ctx, m)
	}
	return p.fwd.Exchange(ctx, m)
}

// Check sends the probe upstream once and returns an *Error when it came
// back in. An upstream that is down or answers anything is not a loop.
// Call it after the server listens, so the looped query can arrive.
func (p *Probe) Check(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	q := new(dns.Msg)
	q.SetQuestion(p.name, dns.TypeHINFO)
	_, _ = p.fwd.Exchange(ctx, q) // the answer does not matter, only whether it came back
	if n := p.Seen(); n > 0 {
		return &Error{Zone: p.zone, Query: p.query, Upstreams: p.fwd.Upstreams(), Seen: n}
	}
	return nil
}

// CheckAll runs Check for every probe concurrently and returns the first
// loop found.
func CheckAll(ctx context.Context, probes []*Probe) error {
	errs := make(chan error, len(probes))
	for _, p := range probes {
		go func() { errs <- p.Check(ctx) }()
	}
	var first error
	for range probes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
