package forward

import (
	"context"

	"github.com/miekg/dns"
)

type optionsKey struct{}

// WithEDNS0Options returns a context under which Exchange sends the
// query's EDNS0 options upstream (CoreDNS's forward passes a client's
// options on; the forwarder drops them unless asked, as for the options
// the rewrite plugin's edns0 rules set).
func WithEDNS0Options(ctx context.Context) context.Context {
	return context.WithValue(ctx, optionsKey{}, true)
}

// passOptions reports whether ctx asks for the query's options upstream.
func passOptions(ctx context.Context) bool {
	v, _ := ctx.Value(optionsKey{}).(bool)
	return v
}

// optionsOf is the query's OPT record with its options in wire format, for
// the key of a shared upstream query ("" without options).
func optionsOf(req *dns.Msg) string {
	opt := req.IsEdns0()
	if opt == nil || len(opt.Option) == 0 {
		return ""
	}
	b := make([]byte, dns.Len(opt))
	n, err := dns.PackRR(opt, b, 0, nil, false)
	if err != nil {
		return opt.String()
	}
	return string(b[:n])
}
