package iptables

import (
	"fmt"
	"net"
	"strconv"
)

// CommentPrefix starts the comment of every rule the agent installs. Rules
// carrying it belong to the agent: Ensure removes stale ones (e.g. for an IP
// that is no longer configured) and Remove deletes all of them.
const CommentPrefix = "nodelocaldns:"

// Rule is one iptables rule: table, chain and the rule specification as
// given to `iptables -t TABLE -I CHAIN SPEC...`.
type Rule struct {
	Table string
	Chain string
	Spec  []string
	// Comment is the text of the rule's `-m comment`, unique per rule.
	Comment string
}

// String is the rule as an iptables command line (without the binary).
func (r Rule) String() string {
	return fmt.Sprintf("-t %s -I %s %v", r.Table, r.Chain, r.Spec)
}

// direction says which end of the packet carries the local IP and port.
type direction int

const (
	toLocal   direction = iota // -d IP --dport PORT
	fromLocal                  // -s IP --sport PORT
)

// portKind says which of the agent's ports a rule is about.
type portKind int

const (
	dnsPort portKind = iota
	healthPort
)

// ruleRow is one row of the rule table below.
type ruleRow struct {
	table, chain string
	proto        string
	dir          direction
	port         portKind
	target       string
	why          string
}

// ruleTable is node-cache's rule set (kubernetes/dns cmd/node-cache), per
// local IP. Connection tracking is skipped for DNS to and from the local IPs:
// no conntrack entry per query, no conntrack-table exhaustion and no DNAT by
// kube-proxy (which is what makes interception of the kube-dns ClusterIP
// work). Because the packets are untracked, the filter table's "accept
// established" rules do not match them, so explicit ACCEPT rules let them
// through a restrictive INPUT/OUTPUT policy.
var ruleTable = []ruleRow{
	// Queries arriving from pods (routed in from their veth).
	{"raw", "PREROUTING", "tcp", toLocal, dnsPort, "NOTRACK", "no conntrack for queries to the cache"},
	{"raw", "PREROUTING", "udp", toLocal, dnsPort, "NOTRACK", "no conntrack for queries to the cache"},
	// Let those untracked queries in.
	{"filter", "INPUT", "tcp", toLocal, dnsPort, "ACCEPT", "accept untracked queries to the cache"},
	{"filter", "INPUT", "udp", toLocal, dnsPort, "ACCEPT", "accept untracked queries to the cache"},
	// Answers sent by the cache.
	{"raw", "OUTPUT", "tcp", fromLocal, dnsPort, "NOTRACK", "no conntrack for answers from the cache"},
	{"raw", "OUTPUT", "udp", fromLocal, dnsPort, "NOTRACK", "no conntrack for answers from the cache"},
	{"filter", "OUTPUT", "tcp", fromLocal, dnsPort, "ACCEPT", "accept untracked answers from the cache"},
	{"filter", "OUTPUT", "udp", fromLocal, dnsPort, "ACCEPT", "accept untracked answers from the cache"},
	// Queries generated on the node itself (hostNetwork pods, the kubelet).
	{"raw", "OUTPUT", "tcp", toLocal, dnsPort, "NOTRACK", "no conntrack for node-local queries to the cache"},
	{"raw", "OUTPUT", "udp", toLocal, dnsPort, "NOTRACK", "no conntrack for node-local queries to the cache"},
	// Liveness probes of the health endpoint.
	{"raw", "OUTPUT", "tcp", toLocal, healthPort, "NOTRACK", "no conntrack for health probes"},
	{"raw", "OUTPUT", "tcp", fromLocal, healthPort, "NOTRACK", "no conntrack for health answers"},
}

// Rules returns the rule set for one local IP, in table order.
func Rules(ip net.IP, dnsPortNum, healthPortNum int) []Rule {
	out := make([]Rule, 0, len(ruleTable))
	for _, row := range ruleTable {
		port := strconv.Itoa(dnsPortNum)
		if row.port == healthPort {
			port = strconv.Itoa(healthPortNum)
		}
		addrFlag, portFlag, arrow := "-d", "--dport", "to"
		if row.dir == fromLocal {
			addrFlag, portFlag, arrow = "-s", "--sport", "from"
		}
		comment := fmt.Sprintf("%s %s %s %s %s", CommentPrefix, row.why, row.proto, arrow, net.JoinHostPort(ip.String(), port))
		out = append(out, Rule{
			Table:   row.table,
			Chain:   row.chain,
			Comment: comment,
			Spec: []string{
				"-p", row.proto, addrFlag, ip.String(), portFlag, port,
				"-m", "comment", "--comment", comment,
				"-j", row.target,
			},
		})
	}
	return out
}
