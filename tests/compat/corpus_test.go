package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// A corpus entry is a Corefile template (with node-cache's __PILLAR__
// variables) and the queries both servers get. refused, when set, says
// that the agent does not run this Corefile yet: it must refuse it at
// start with a message containing refused (and CoreDNS must run it).
type entry struct {
	name     string
	corefile func(t *testing.T) string
	queries  []query
	refused  string
	// contains are lines the rendered Corefile must have (so that a
	// customization that silently did not apply fails the test).
	contains []string
	// monitoring checks the monitoring overlay's queries against the
	// families both servers export after this entry's queries.
	monitoring bool
	// second renders __PILLAR__DNS__SERVER__ as a second local IP (the
	// kube-dns ClusterIP of node-cache's interception mode).
	second bool
}

// corpus is every Corefile the suite runs. Add one per plugin and option
// the agent learns (and one per Corefile shape seen in the wild).
func corpus() []entry {
	return []entry{
		{
			name:       "official node-local-dns ConfigMap",
			corefile:   official,
			queries:    officialQueries(),
			monitoring: true,
		},
		{
			// Interception mode: every block binds the link-local IP and
			// the kube-dns ClusterIP; queries come in on both.
			name:     "official ConfigMap, interception mode (two addresses)",
			corefile: official,
			second:   true,
			queries: func() []query {
				var qs []query
				for _, q := range clusterQueries()[:6] {
					qs = append(qs, q)
					q.toSecond = true
					qs = append(qs, q)
				}
				return append(qs, query{name: "www.example.test.", qtype: dns.TypeA, toSecond: true})
			}(),
		},
		{
			// The Corefile community charts (deliveryhero/node-local-dns)
			// generate with enableLogging and prefetch: the official one
			// with `log` and `prefetch` in every block.
			name: "chart: log and prefetch",
			corefile: func(t *testing.T) string {
				s := official(t)
				s = strings.ReplaceAll(s, "    errors\n", "    log\n    errors\n")
				s = strings.ReplaceAll(s, "            denial 9984 5\n", "            denial 9984 5\n            prefetch 2 60s 20%\n")
				return s
			},
			queries:  officialQueries(),
			contains: []string{"    log\n", "prefetch 2 60s 20%"},
		},
		{
			// The same chart's noIPv6Lookups: AAAA answered with NOERROR
			// and no records by the template plugin in every block.
			name: "chart: noIPv6Lookups (template)",
			corefile: func(t *testing.T) string {
				return strings.ReplaceAll(official(t), "    prometheus :9253\n",
					"    template IN AAAA {\n        rcode NOERROR\n    }\n    prometheus :9253\n")
			},
			queries:  officialQueries(),
			contains: []string{"template IN AAAA"},
		},
		{
			// One block for everything, no cluster zones: the shape of
			// many hand-written node-cache Corefiles; cache options.
			name: "single block, cache options, no loop",
			corefile: func(*testing.T) string {
				return `.:53 {
    errors
    cache {
        success 5000 60 10
        denial 2000 10 2
        servfail 3s
    }
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__ {
        max_fails 3
        expire 20s
        health_check 1s
        policy sequential
    }
    prometheus __PILLAR__LOCAL__DNS__:9253
    health __PILLAR__LOCAL__DNS__:8080
}
`
			},
			queries: upstreamQueries(),
		},
		{
			// errors and log options, cache options: prefetch, serve_stale,
			// servfail, keepttl (hits keep the stored TTL).
			name: "errors, log and cache options",
			corefile: func(*testing.T) string {
				return `.:53 {
    errors {
        consolidate 5m ".* timeout$" warning
    }
    log . "{remote}:{port} {type} {name} {rcode}" {
        class denial error
    }
    cache 120 {
        success 5000 60 10
        denial 2000 10 2
        prefetch 3 1m 20%
        serve_stale 1h verify
        servfail 2s
        keepttl
    }
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: upstreamQueries(),
		},
		{
			// forward options: policy, limits, health checks, except (the
			// excepted name falls through to no plugin), and a chained
			// forward (next) to the cluster DNS on NXDOMAIN.
			name: "forward options and next",
			corefile: func(*testing.T) string {
				return `.:53 {
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__ {
        except deleg.example.test
        policy round_robin
        max_fails 5
        max_concurrent 500
        expire 5s
        health_check 2s no_rec
        prefer_udp
        next NXDOMAIN
    }
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: upstreamQueries(),
		},
		{
			// bufsize (answers cut at 512 bytes), timeouts, debug, pprof,
			// a snippet, and a reverse zone in CIDR form.
			name: "bufsize, timeouts, debug, pprof, import, CIDR zone",
			corefile: func(*testing.T) string {
				return `(common) {
    errors
    cache 30
    bind __PILLAR__LOCAL__DNS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
10.96.0.0/16:53 {
    import common
    forward . __PILLAR__CLUSTER__DNS__
}
.:53 {
    import common
    bufsize 512
    timeouts {
        read 5s
        write 5s
        idle 20s
    }
    debug
    pprof __PILLAR__LOCAL__DNS__:6053
    forward . __PILLAR__UPSTREAM__SERVERS__
}
`
			},
			queries: append(upstreamQueries(),
				query{name: "5.0.96.10.in-addr.arpa.", qtype: dns.TypePTR},
				query{name: "9.9.96.10.in-addr.arpa.", qtype: dns.TypePTR},
				query{name: "1.0.0.10.in-addr.arpa.", qtype: dns.TypePTR}),
		},
		{
			// hosts: inline entries and a file, ttl, reverse names,
			// fallthrough to forward.
			name: "hosts",
			corefile: func(t *testing.T) string {
				file := filepath.Join(t.TempDir(), "hosts")
				if err := os.WriteFile(file, []byte("192.0.2.201 filehost.example.test\n2001:db8::201 filehost.example.test\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return `.:53 {
    hosts ` + file + ` example.test 2.0.192.in-addr.arpa {
        192.0.2.200 inline.example.test
        10.96.0.77 h1.example.test h2.example.test
        ttl 60
        fallthrough
    }
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: []query{
				{name: "inline.example.test.", qtype: dns.TypeA},
				{name: "INLINE.example.test.", qtype: dns.TypeAAAA},
				{name: "filehost.example.test.", qtype: dns.TypeAAAA, edns: true},
				{name: "h2.example.test.", qtype: dns.TypeA},
				{name: "inline.example.test.", qtype: dns.TypeMX},
				{name: "200.2.0.192.in-addr.arpa.", qtype: dns.TypePTR},
				{name: "www.example.test.", qtype: dns.TypeA},
				{name: "nx.example.test.", qtype: dns.TypeA},
			},
		},
		{
			// rewrite: exact, suffix and regex names with answer rewriting,
			// type and ttl rules.
			name: "rewrite",
			corefile: func(*testing.T) string {
				return `.:53 {
    rewrite name exact alias.example.test. www.example.test.
    rewrite name suffix .corp.test. .example.test. answer auto
    rewrite stop {
        name regex (.*)\.svc\.example\.test\. {1}.example.test.
        answer name (.*)\.example\.test\. {1}.svc.example.test.
    }
    rewrite ttl cname.example.test. 15
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: []query{
				{name: "alias.example.test.", qtype: dns.TypeA},
				{name: "www.corp.test.", qtype: dns.TypeA},
				{name: "mx.corp.test.", qtype: dns.TypeMX},
				{name: "www.svc.example.test.", qtype: dns.TypeAAAA},
				{name: "nx.svc.example.test.", qtype: dns.TypeA},
				{name: "cname.example.test.", qtype: dns.TypeA},
				{name: "www.example.test.", qtype: dns.TypeA},
			},
		},
		{
			// template: regex groups into answers, rcode with authority,
			// fallthrough.
			name: "template",
			corefile: func(*testing.T) string {
				return `.:53 {
    template IN A tmpl.example.test {
        match ^(?P<a>[0-9]+)-(?P<b>[0-9]+)\.tmpl\.example\.test\.$
        answer "{{ .Name }} 60 IN A 10.0.{{ .Group.a }}.{{ .Group.b }}"
        fallthrough
    }
    template IN MX example.test {
        rcode NXDOMAIN
        authority "example.test. 60 IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60"
    }
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: []query{
				{name: "1-2.tmpl.example.test.", qtype: dns.TypeA},
				{name: "300-2.tmpl.example.test.", qtype: dns.TypeA},
				{name: "x.tmpl.example.test.", qtype: dns.TypeA},
				{name: "mx.example.test.", qtype: dns.TypeMX},
				{name: "www.example.test.", qtype: dns.TypeA},
			},
		},
		{
			// dns64 and loadbalance: AAAA synthesized from A for names
			// without AAAA, and shuffled A records (compared as a set).
			name: "dns64 and loadbalance",
			corefile: func(*testing.T) string {
				return `.:53 {
    dns64 {
        prefix 64:ff9b::/96
    }
    loadbalance round_robin
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: []query{
				{name: "mail.example.test.", qtype: dns.TypeAAAA},
				{name: "www.example.test.", qtype: dns.TypeAAAA},
				{name: "multi.example.test.", qtype: dns.TypeA, unordered: true},
				{name: "multi.example.test.", qtype: dns.TypeAAAA, unordered: true},
				{name: "nx.example.test.", qtype: dns.TypeAAAA},
			},
		},
		{
			// whoami answers with the client's address (the port differs
			// between the two clients, so additional is not compared).
			name: "whoami",
			corefile: func(*testing.T) string {
				return `whoami.test:53 {
    whoami
    bind __PILLAR__LOCAL__DNS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: []query{
				{name: "whoami.test.", qtype: dns.TypeA, clientPort: true},
				{name: "x.whoami.test.", qtype: dns.TypeAAAA, clientPort: true},
			},
		},
		{
			// A block without a cache: every answer is the upstream's.
			name: "no cache",
			corefile: func(*testing.T) string {
				return `.:53 {
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: upstreamQueries(),
		},
		{
			// Only the cluster zone is served: every other name is REFUSED
			// by the server itself.
			name: "cluster zone only",
			corefile: func(*testing.T) string {
				return `cluster.local:53 {
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus __PILLAR__LOCAL__DNS__:9253
}
`
			},
			queries: append(clusterQueries(), query{name: "www.example.test.", qtype: dns.TypeA}),
		},
	}
}

// official is the official ConfigMap's Corefile (tests/agent keeps a
// verbatim copy, checked against the reference manifest there), with its
// `prometheus :9253` bound to the local IP so that both servers can run on
// one host.
func official(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "agent", "testdata", "Corefile.base"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wildcardListen turns `prometheus :9253`, `health :8080` and the like
// into listeners on the local IP.
var wildcardListen = regexp.MustCompile(`(?m)^(\s*(?:prometheus|health|ready|pprof)\s+):(\d+)`)

// render fills the template's variables as node-cache would for a node
// whose local IP is local and, in interception mode, the kube-dns ClusterIP
// second ("" in injection mode).
func render(tpl, local, second, cluster, upstream string) string {
	tpl = wildcardListen.ReplaceAllString(tpl, "${1}__PILLAR__LOCAL__DNS__:${2}")
	return strings.NewReplacer(
		"__PILLAR__DNS__DOMAIN__", "cluster.local",
		"__PILLAR__LOCAL__DNS__", local,
		"__PILLAR__DNS__SERVER__", second,
		"__PILLAR__CLUSTER__DNS__", cluster,
		"__PILLAR__UPSTREAM__SERVERS__", upstream,
	).Replace(tpl)
}

// query is one question and how it is asked.
type query struct {
	name  string
	qtype uint16
	class uint16 // 0: IN
	tcp   bool
	// edns adds an OPT record (UDP size 1232 unless size is set).
	edns bool
	size uint16
	do   bool
	cd   bool
	noRD bool
	// once: ask once (no second, cached, answer to compare).
	once bool
	// upstreamTC: the upstream truncates its UDP answer to this query.
	upstreamTC bool
	// toSecond sends the query to the second local IP.
	toSecond bool
	// unordered: the records of a section may come in any order
	// (loadbalance).
	unordered bool
	// clientPort: the answer holds the client's port (whoami), which
	// differs between the two clients.
	clientPort bool
	// opcode, version and twoQuestions make malformed or unusual queries.
	opcode       int
	version      uint8
	twoQuestions bool
	// raw, when set, is sent as it is over UDP (its ID is replaced); name
	// only labels it.
	raw []byte
}

func (q query) String() string {
	if q.raw != nil {
		return q.name
	}
	var b strings.Builder
	class := q.class
	if class == 0 {
		class = dns.ClassINET
	}
	fmt.Fprintf(&b, "%s %s %s", q.name, dns.ClassToString[class], dns.TypeToString[q.qtype])
	for _, f := range []struct {
		on   bool
		name string
	}{{q.tcp, "tcp"}, {q.edns, "edns"}, {q.do, "do"}, {q.cd, "cd"}, {q.noRD, "nord"}, {q.version > 0, fmt.Sprintf("ednsv%d", q.version)}, {q.twoQuestions, "2q"}} {
		if f.on {
			b.WriteString(" +" + f.name)
		}
	}
	if q.opcode != 0 {
		fmt.Fprintf(&b, " opcode %s", dns.OpcodeToString[q.opcode])
	}
	if q.size != 0 {
		fmt.Fprintf(&b, " bufsize %d", q.size)
	}
	return b.String()
}

// msg builds the query message.
func (q query) msg(id uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	m.Id = id
	if q.class != 0 {
		m.Question[0].Qclass = q.class
	}
	m.RecursionDesired = !q.noRD
	m.CheckingDisabled = q.cd
	m.Opcode = q.opcode
	if q.twoQuestions {
		m.Question = append(m.Question, dns.Question{Name: "other." + q.name, Qtype: q.qtype, Qclass: dns.ClassINET})
	}
	if q.edns || q.do || q.version > 0 || q.size > 0 {
		size := q.size
		if size == 0 {
			size = 1232
		}
		m.SetEdns0(size, q.do)
		m.IsEdns0().SetVersion(q.version)
	}
	return m
}

func clusterQueries() []query {
	return []query{
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "WEB.Default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA, edns: true},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeA, tcp: true, edns: true, do: true},
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV},
		{name: "alias.default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "short.default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeMX},
		{name: "nx.default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "nx.default.svc.cluster.local.", qtype: dns.TypeA, edns: true},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeA, cd: true},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeA, noRD: true},
		{name: "a.wild.default.svc.cluster.local.", qtype: dns.TypeA},
		{name: "big.default.svc.cluster.local.", qtype: dns.TypeTXT},
		{name: "big.default.svc.cluster.local.", qtype: dns.TypeTXT, edns: true, size: 4096},
		{name: "big.default.svc.cluster.local.", qtype: dns.TypeTXT, tcp: true},
		{name: "cluster.local.", qtype: dns.TypeSOA},
	}
}

func upstreamQueries() []query {
	return []query{
		{name: "www.example.test.", qtype: dns.TypeA},
		{name: "www.example.test.", qtype: dns.TypeAAAA, edns: true},
		{name: "WWW.EXAMPLE.test.", qtype: dns.TypeA, tcp: true},
		{name: "www.example.test.", qtype: dns.TypeA, edns: true, do: true},
		{name: "www.example.test.", qtype: dns.TypeMX},
		{name: "mx.example.test.", qtype: dns.TypeMX},
		{name: "cname.example.test.", qtype: dns.TypeA},
		{name: "short.example.test.", qtype: dns.TypeA},
		{name: "long.example.test.", qtype: dns.TypeA},
		{name: "nx.example.test.", qtype: dns.TypeA},
		{name: "sub.deleg.example.test.", qtype: dns.TypeA},
		{name: "big.example.test.", qtype: dns.TypeTXT, upstreamTC: true},
		{name: "big.example.test.", qtype: dns.TypeTXT, edns: true, upstreamTC: true},
		{name: "big.example.test.", qtype: dns.TypeTXT, tcp: true, upstreamTC: true},
		{name: "www.other.invalid.", qtype: dns.TypeA},
		{name: "example.test.", qtype: dns.TypeNS},
		{name: "version.bind.", qtype: dns.TypeTXT, class: dns.ClassCHAOS},
		{name: "www.example.test.", qtype: dns.TypeA, opcode: dns.OpcodeNotify, once: true},
		{name: "www.example.test.", qtype: dns.TypeA, version: 1, once: true},
		{name: "www.example.test.", qtype: dns.TypeA, twoQuestions: true, once: true},
		{name: "raw: no question", raw: rawQuery(0, 0, ""), once: true},
		{name: "raw: two answer records", raw: rawQuery(1, 2, "www.example.test."), once: true},
		{name: "raw: question cut short", raw: rawQuery(1, 0, "www.example.test.")[:20], once: true},
	}
}

// rawQuery builds a query header with qd questions (the name, type A,
// class IN, or none) and an answer count an (without the records).
func rawQuery(qd, an uint16, name string) []byte {
	b := []byte{0, 0, 1, 0, byte(qd >> 8), byte(qd), byte(an >> 8), byte(an), 0, 0, 0, 0}
	if qd > 0 {
		wire := make([]byte, 256)
		n, _ := dns.PackDomainName(name, wire, 0, nil, false)
		b = append(b, wire[:n]...)
		b = append(b, 0, 1, 0, 1)
	}
	return b
}

func officialQueries() []query {
	q := clusterQueries()
	q = append(q,
		query{name: "5.0.96.10.in-addr.arpa.", qtype: dns.TypePTR},
		query{name: "9.9.96.10.in-addr.arpa.", qtype: dns.TypePTR},
		query{name: "1.0.0.127.in-addr.arpa.", qtype: dns.TypePTR},
		query{name: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR},
	)
	return append(q, upstreamQueries()...)
}

// clusterZone is the cluster DNS's zone (NSD): TTLs of 5s as kube-dns
// and CoreDNS's kubernetes plugin give.
func clusterZone(ip string) string {
	var b strings.Builder
	b.WriteString(`$ORIGIN cluster.local.
$TTL 5
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
@ IN NS ns.dns
ns.dns IN A ` + ip + `
web.default.svc IN A 10.96.0.5
web.default.svc IN AAAA fd00::5
_http._tcp.web.default.svc IN SRV 0 100 80 web.default.svc
alias.default.svc IN CNAME web.default.svc
short.default.svc 2 IN A 10.96.0.9
*.wild.default.svc IN A 10.96.0.30
`)
	for i := range 10 { // about 1 kB: truncated at 512 bytes
		fmt.Fprintf(&b, "big.default.svc IN TXT \"%s%02d\"\n", strings.Repeat("k", 90), i)
	}
	return b.String()
}

const reverseZone = `$ORIGIN 96.10.in-addr.arpa.
$TTL 5
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
@ IN NS ns.dns.cluster.local.
5.0 IN PTR web.default.svc.cluster.local.
`

// externalZone is the node's upstream's zone (NSD).
func externalZone() string {
	var b strings.Builder
	b.WriteString(`$ORIGIN example.test.
$TTL 300
@ IN SOA ns.example.test. hostmaster.example.test. 1 7200 1800 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A 192.0.2.10
www IN AAAA 2001:db8::10
mx IN MX 10 mail
mail IN A 192.0.2.25
multi IN A 192.0.2.31
multi IN A 192.0.2.32
multi IN A 192.0.2.33
cname IN CNAME www
short 2 IN A 192.0.2.2
long 86400 IN A 192.0.2.86
deleg IN NS ns.deleg
ns.deleg IN A 192.0.2.54
`)
	for i := range 12 { // about 2.5 kB: truncated over UDP
		fmt.Fprintf(&b, "big IN TXT \"%s%02d\"\n", strings.Repeat("t", 200), i)
	}
	return b.String()
}
