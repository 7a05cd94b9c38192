package whoami

import (
	"reflect"
	"testing"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/plugin/plugintest"
)

func TestWhoami(t *testing.T) {
	for _, tc := range []struct {
		client, qname string
		tcp           bool
		want          []string
	}{
		{"10.0.0.9:5353", "Example.org.", false, []string{"Example.org.\t0\tIN\tA\t10.0.0.9", "_udp.Example.org.\t0\tIN\tSRV\t0 0 5353 ."}},
		{"[::ffff:10.0.0.8]:1", "x.", true, []string{"x.\t0\tIN\tA\t10.0.0.8", "_tcp.x.\t0\tIN\tSRV\t0 0 1 ."}},
		{"[fd00::1]:53", ".", false, []string{".\t0\tIN\tAAAA\tfd00::1", "_udp.\t0\tIN\tSRV\t0 0 53 ."}},
	} {
		r := plugintest.Query(tc.qname, dns.TypeA, tc.client)
		r.TCP = tc.tcp
		next := &plugintest.Next{}
		m, err := plugintest.Run(Whoami{}, r, next)
		if err != nil || next.Calls != 0 {
			t.Fatalf("err %v, next called %d times", err, next.Calls)
		}
		if got := plugintest.RRs(m.Extra); !reflect.DeepEqual(got, tc.want) || len(m.Answer) != 0 || !m.Authoritative {
			t.Errorf("%s: extra %q, want %q (answer %v)", tc.client, got, tc.want, m.Answer)
		}
	}
}
