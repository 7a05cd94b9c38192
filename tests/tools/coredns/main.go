// Command coredns is CoreDNS v1.13.2 with the plugins current node-cache
// (kubernetes/dns cmd/node-cache) compiles in, plus kubernetes and ready so
// that the same binary can also run as kube-dns with kubeadm's Corefile.
// The differential tests (tests/compat) and the real-node tests (tests/e2e)
// run it as the reference; it is built from the Go module proxy by
// `make coredns` into bin/coredns.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/bufsize"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/dns64"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/pprof"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/timeouts"
	_ "github.com/coredns/coredns/plugin/trace"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is plugin.cfg's order at v1.13.2, cut to the plugins above:
// the order in which CoreDNS chains them, whatever the Corefile's order.
var directives = []string{
	"timeouts", "reload", "bufsize", "bind", "debug", "trace", "ready", "health", "pprof",
	"prometheus", "errors", "log", "dns64", "loadbalance", "cache", "rewrite", "template",
	"hosts", "kubernetes", "loop", "forward", "whoami",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
