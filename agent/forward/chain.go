package forward

import (
	"context"
	"errors"
	"slices"

	"github.com/miekg/dns"
)

// ErrNoMatch means no forwarder of a Chain handles the name.
var ErrNoMatch = errors.New("forward: no forward plugin handles the name")

// Chain is the forward plugins of one server block in file order, as
// CoreDNS chains them: a query goes to the first forwarder that matches
// its name (FROM and except); an answer whose rcode is in that
// forwarder's `next` list goes on to the following forwarders.
type Chain struct {
	fs []*Forwarder
}

// NewChain returns the chain of fs (at least one).
func NewChain(fs ...*Forwarder) *Chain { return &Chain{fs: fs} }

// Match reports whether a forwarder of the chain handles name.
func (c *Chain) Match(name string) bool {
	for _, f := range c.fs {
		if f.Match(name) {
			return true
		}
	}
	return false
}

// Exchange forwards req along the chain. The answer of the last forwarder
// asked stands, whatever its rcode; a `next` rcode with no matching
// forwarder after it fails the query, as CoreDNS's end of the plugin
// chain does.
func (c *Chain) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if req == nil || len(req.Question) != 1 {
		return nil, errors.New("forward: query must have exactly one question")
	}
	name := req.Question[0].Name
	for i, f := range c.fs {
		if !f.Match(name) {
			continue
		}
		r, err := f.Exchange(ctx, req)
		if err != nil {
			return nil, err
		}
		if i < len(c.fs)-1 && slices.Contains(f.cfg.next, r.Rcode) {
			continue
		}
		return r, nil
	}
	return nil, ErrNoMatch
}
