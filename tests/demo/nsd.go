package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Names in the demo's zones and what they resolve to.
const (
	serviceName  = "web"                        // found through the pod's search path
	serviceFQDN  = "web.demo.svc.cluster.local" // its full name
	serviceAddr  = "10.244.1.7"                 // its A record
	externalName = "www.example.com"            // served by the node's upstream resolver
	externalAddr = "192.0.2.80"                 // its A record
)

// zones returns the zone files NSD serves: cluster.local (what kube-dns
// would answer) and example.com (what the node's upstream would answer).
func zones() map[string]string {
	return map[string]string{
		"cluster.local": `$TTL 30
@ IN SOA ns.cluster.local. admin.cluster.local. 1 3600 600 86400 5
@ IN NS ns.cluster.local.
ns IN A ` + kubeDNSIP + `
kubernetes.default.svc IN A 10.96.0.1
kube-dns.kube-system.svc IN A ` + kubeDNSIP + `
web.demo.svc IN A ` + serviceAddr + `
`,
		"example.com": `$TTL 30
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 5
@ IN NS ns.example.com.
ns IN A 192.0.2.53
www IN A ` + externalAddr + `
`,
	}
}

// writeNSDConfig writes nsd.conf and the zone files into dir for an NSD
// listening on every addr (IP) at port, and returns the nsd.conf path.
func writeNSDConfig(dir string, addrs []string, port int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("server:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "  ip-address: %s\n", a)
	}
	fmt.Fprintf(&b, `  port: %d
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: %q
  pidfile: %q
  logfile: %q
  xfrdfile: %q
  xfrdir: %q
  zonelistfile: %q
  database: ""
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
`, port, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"),
		filepath.Join(dir, "xfrd.state"), dir, filepath.Join(dir, "zone.list"))
	for name, text := range zones() {
		if err := os.WriteFile(filepath.Join(dir, name+".zone"), []byte(text), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "zone:\n  name: %s\n  zonefile: %s.zone\n", name, name)
	}
	conf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	return conf, nil
}
