// Package plugin is the agent's chain of answer-changing plugins (hosts,
// rewrite, template, dns64, loadbalance, whoami): the request a plugin
// sees, the handler signature, and the helpers CoreDNS's plugins share
// (zone matching, fallthrough). The server runs a block's handlers in
// CoreDNS's plugin.cfg order around its cache and forwarder; the plugins
// live in the packages below this one.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Request is one query as the plugins see it.
type Request struct {
	// Msg is the query. A plugin may change its question (rewrite) for the
	// plugins after it; the server answers with the client's question.
	Msg *dns.Msg
	// Client is the client's address, TCP its transport.
	Client netip.AddrPort
	TCP    bool
	// Server is the block's server label ("dns://:53") for metrics.
	Server string
	// Lookup resolves a name through the whole server again, from the top
	// of the chain of the block that serves it, with the client's EDNS0
	// (CoreDNS's upstream package, used by dns64 and template). It is nil
	// when the server offers none.
	Lookup func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
	// PassOptions sends the query's EDNS0 options upstream (set by the
	// rewrite plugin's edns0 rules; the forwarder drops them otherwise).
	PassOptions bool
	// Writer is the plugin that wrote the reply, for the plugin label of
	// coredns_dns_responses_total: set by the plugin that makes a reply and
	// by the ones above it that rewrite it, as CoreDNS finds it from the
	// caller of WriteMsg.
	Writer string
}

// Name is the query name, lower-cased (CoreDNS's state.Name()).
func (r *Request) Name() string { return strings.ToLower(dns.Fqdn(r.Msg.Question[0].Name)) }

// QType is the query type.
func (r *Request) QType() uint16 { return r.Msg.Question[0].Qtype }

// Family is 1 for a client on IPv4, 2 for IPv6.
func (r *Request) Family() int {
	if r.Client.Addr().Unmap().Is4() {
		return 1
	}
	return 2
}

// Proto is "udp" or "tcp".
func (r *Request) Proto() string {
	if r.TCP {
		return "tcp"
	}
	return "udp"
}

// Next passes a request to the rest of the chain.
type Next func(ctx context.Context, r *Request) (*dns.Msg, error)

// Handler is one plugin. ServeDNS answers r itself or calls next (at most
// once) and may change what next returns. A handler returns a reply, or an
// error: an *RcodeError when it answers with an rcode without writing a
// message (CoreDNS's "return dns.RcodeServerFailure, nil"), which caches
// above it do not store.
type Handler interface {
	ServeDNS(ctx context.Context, r *Request, next Next) (*dns.Msg, error)
}

// RcodeError is a reply made of an rcode alone, not written by a plugin.
type RcodeError struct {
	Rcode int
	Err   error // the cause, for the errors plugin; may be nil
}

func (e *RcodeError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", dns.RcodeToString[e.Rcode], e.Err)
	}
	return dns.RcodeToString[e.Rcode]
}

func (e *RcodeError) Unwrap() error { return e.Err }

// Fail is an RcodeError with rcode and cause err.
func Fail(rcode int, err error) error { return &RcodeError{Rcode: rcode, Err: err} }

// Rcode is the rcode of the reply to a chain that failed with err:
// an RcodeError's, SERVFAIL otherwise.
func Rcode(err error) int {
	if re, ok := errors.AsType[*RcodeError](err); ok {
		return re.Rcode
	}
	return dns.RcodeServerFailure
}

// Run runs handlers in order, the last one's next being end.
func Run(ctx context.Context, handlers []Handler, end Next, r *Request) (*dns.Msg, error) {
	if len(handlers) == 0 {
		return end(ctx, r)
	}
	return handlers[0].ServeDNS(ctx, r, func(ctx context.Context, r *Request) (*dns.Msg, error) {
		return Run(ctx, handlers[1:], end, r)
	})
}

// Reply is an empty reply to req (SetReply) with AA set, as the plugins
// that answer from their own data write it.
func Reply(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	return m
}

// Zones is a list of lower-case FQDN zones.
type Zones []string

// Matches returns the longest zone that contains name (lower-case FQDN),
// or "" (CoreDNS's plugin.Zones.Matches).
func (z Zones) Matches(name string) string {
	best := ""
	for _, zone := range z {
		if len(zone) > len(best) && dns.IsSubDomain(zone, name) {
			best = zone
		}
	}
	return best
}

// Fall is a fallthrough setting: nil means no fallthrough, otherwise the
// zones for which it applies ("." for all).
type Fall []string

// Through reports whether a query for name falls through.
func (f Fall) Through(name string) bool { return Zones(f).Matches(name) != "" }
