package forward

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/dnstest"
)

// TestEDNS0OptionsUpstream checks that a query's EDNS0 options go upstream
// only under WithEDNS0Options, and that queries differing only in them
// are not answered by one upstream query.
func TestEDNS0OptionsUpstream(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.MustZone("www.example. 300 IN A 192.0.2.1").Handler())
	f := newForwarder(t, corefile.Forward{To: []string{up.Addr}}, fastOpts(nil))
	withLocal := func(data string) *dns.Msg {
		m := query("www.example.", dns.TypeA)
		m.SetEdns0(1232, false)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: 0xffee, Data: []byte(data)})
		return m
	}
	last := func() []dns.EDNS0 {
		qs := up.Queries()
		opt := qs[len(qs)-1].Msg.IsEdns0()
		if opt == nil {
			t.Fatal("upstream query without OPT")
		}
		return opt.Option
	}
	if _, err := f.Exchange(context.Background(), withLocal("a")); err != nil {
		t.Fatal(err)
	}
	if got := last(); len(got) != 0 {
		t.Errorf("options passed without being asked: %v", got)
	}
	ctx := WithEDNS0Options(context.Background())
	for _, data := range []string{"a", "b"} {
		if _, err := f.Exchange(ctx, withLocal(data)); err != nil {
			t.Fatal(err)
		}
		got := last()
		if len(got) != 1 || string(got[0].(*dns.EDNS0_LOCAL).Data) != data {
			t.Errorf("upstream saw options %v, want local %q", got, data)
		}
	}
	if optionsOf(withLocal("a")) == optionsOf(withLocal("b")) || optionsOf(query("x.", dns.TypeA)) != "" {
		t.Error("options keys do not tell the queries apart")
	}
}
