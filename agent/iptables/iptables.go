// Package iptables owns the agent's iptables rules: node-cache's NOTRACK and
// ACCEPT rules for every local IP (ip6tables for IPv6 ones), installed before
// the agent serves, re-ensured on every sync without ever duplicating a rule,
// and removed on teardown.
//
// Rules are recognised by their comment (every rule carries a unique
// "nodelocaldns: ..." comment), not with `iptables -C` alone: Ensure lists each
// chain once, counts the copies of every rule, inserts the missing ones and
// deletes extra copies and stale rules of ours (kubernetes/dns#568 is what
// happens otherwise).
package iptables

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Runner is the part of github.com/coreos/go-iptables the Manager uses; the
// seam lets unit tests record the calls.
type Runner interface {
	// List returns the chain as `iptables -S` lines.
	List(table, chain string) ([]string, error)
	// Insert adds a rule at position pos (1 = first).
	Insert(table, chain string, pos int, rulespec ...string) error
	// Delete removes the first rule matching rulespec.
	Delete(table, chain string, rulespec ...string) error
}

// Config is what a Manager needs.
type Config struct {
	// IPs are the local IPs (IPv4 and IPv6 may be mixed).
	IPs []net.IP
	// DNSPort and HealthPort are the agent's DNS and health ports.
	DNSPort, HealthPort int
	// V4 and V6 run iptables and ip6tables. Each is needed only when IPs
	// holds an address of its family.
	V4, V6 Runner
	// Errors, when set, counts failures by errortype ("iptables",
	// "iptables_lock").
	Errors *prometheus.CounterVec
}

// Changes counts what one Ensure or Remove did.
type Changes struct {
	Inserted, Deleted int
}

// Manager installs and removes the rule set of a fixed list of local IPs.
type Manager struct {
	families []family
	errors   *prometheus.CounterVec
}

type family struct {
	name   string // "ipv4" or "ipv6"
	runner Runner
	rules  []Rule
}

// New validates cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.DNSPort <= 0 || cfg.DNSPort > 65535 || cfg.HealthPort <= 0 || cfg.HealthPort > 65535 {
		return nil, fmt.Errorf("iptables: ports out of range (dns %d, health %d)", cfg.DNSPort, cfg.HealthPort)
	}
	if len(cfg.IPs) == 0 {
		return nil, errors.New("iptables: no local IPs")
	}
	v4 := family{name: "ipv4", runner: cfg.V4}
	v6 := family{name: "ipv6", runner: cfg.V6}
	for _, ip := range cfg.IPs {
		f := &v6
		if ip.To4() != nil {
			f = &v4
			ip = ip.To4()
		}
		if f.runner == nil {
			return nil, fmt.Errorf("iptables: no %s runner for local IP %s", f.name, ip)
		}
		f.rules = append(f.rules, Rules(ip, cfg.DNSPort, cfg.HealthPort)...)
	}
	m := &Manager{errors: cfg.Errors}
	for _, f := range []family{v4, v6} {
		if len(f.rules) > 0 {
			m.families = append(m.families, f)
		}
	}
	return m, nil
}

// Rules returns every rule the Manager keeps, IPv4 first.
func (m *Manager) Rules() []Rule {
	var out []Rule
	for _, f := range m.families {
		out = append(out, f.rules...)
	}
	return out
}

// Ensure makes every rule present exactly once. With prune, rules of ours
// that are not in the set (an older configuration's) are deleted too;
// without, they are kept (once): a twin instance with another configuration
// may still need them. It carries on past errors (each is counted) and
// returns them joined.
func (m *Manager) Ensure(prune bool) (Changes, error) {
	var ch Changes
	var errs []error
	for _, f := range m.families {
		chains := allChains()
		if !prune {
			chains = chainsOf(f.rules)
		}
		for _, tc := range chains {
			if err := m.ensureChain(f, tc, f.rulesIn(tc), prune, &ch); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ch, errors.Join(errs...)
}

// Remove deletes every rule carrying CommentPrefix from the chains the rule
// table uses, including stale ones from other configurations.
func (m *Manager) Remove() (Changes, error) {
	var ch Changes
	var errs []error
	for _, f := range m.families {
		for _, tc := range allChains() {
			if err := m.ensureChain(f, tc, nil, true, &ch); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ch, errors.Join(errs...)
}

// Present counts the rules of ours (by comment) currently installed; for
// tests and logs.
func (m *Manager) Present() (int, error) {
	n := 0
	for _, f := range m.families {
		for _, tc := range allChains() {
			lines, err := f.runner.List(tc.table, tc.chain)
			if err != nil {
				return n, m.fail(f, tc, "list", err)
			}
			for _, l := range lines {
				if c, ok := ownComment(l); ok && c != "" {
					n++
				}
			}
		}
	}
	return n, nil
}

// ensureChain brings one chain to the wanted state: each wanted rule once;
// other rules of ours deleted (prune) or kept once.
func (m *Manager) ensureChain(f family, tc tableChain, want []Rule, prune bool, ch *Changes) error {
	lines, err := f.runner.List(tc.table, tc.chain)
	if err != nil {
		return m.fail(f, tc, "list", err)
	}
	wanted := make(map[string]bool, len(want))
	for _, r := range want {
		wanted[r.Comment] = true
	}
	count := make(map[string]int)
	var errs []error
	for _, line := range lines {
		comment, ok := ownComment(line)
		if !ok {
			continue
		}
		count[comment]++
		if count[comment] == 1 && (wanted[comment] || !prune) {
			continue
		}
		// A duplicate or a stale rule of ours: delete this exact line.
		spec, err := specOf(line, tc.chain)
		if err != nil {
			errs = append(errs, m.fail(f, tc, "parse", err))
			continue
		}
		if err := f.runner.Delete(tc.table, tc.chain, spec...); err != nil {
			errs = append(errs, m.fail(f, tc, "delete", err))
			continue
		}
		ch.Deleted++
	}
	for _, r := range want {
		if count[r.Comment] > 0 {
			continue
		}
		if err := f.runner.Insert(r.Table, r.Chain, 1, r.Spec...); err != nil {
			errs = append(errs, m.fail(f, tc, "insert", err))
			continue
		}
		ch.Inserted++
	}
	return errors.Join(errs...)
}

func (m *Manager) fail(f family, tc tableChain, op string, err error) error {
	if m.errors != nil {
		m.errors.WithLabelValues(ErrorType(err)).Inc()
	}
	return fmt.Errorf("iptables: %s %s %s/%s: %w", op, f.name, tc.table, tc.chain, err)
}

// ErrorType classifies an iptables error for
// coredns_nodecache_setup_errors_total: "iptables_lock" when the xtables lock
// could not be taken within the wait, else "iptables".
func ErrorType(err error) string {
	if err != nil && strings.Contains(err.Error(), "xtables lock") {
		return "iptables_lock"
	}
	return "iptables"
}

type tableChain struct{ table, chain string }

// chainsOf lists the distinct chains of rules, in order of first use.
func chainsOf(rules []Rule) []tableChain {
	var out []tableChain
	seen := map[tableChain]bool{}
	for _, r := range rules {
		tc := tableChain{r.Table, r.Chain}
		if !seen[tc] {
			seen[tc] = true
			out = append(out, tc)
		}
	}
	return out
}

// allChains lists every chain the rule table uses.
func allChains() []tableChain {
	var out []tableChain
	seen := map[tableChain]bool{}
	for _, row := range ruleTable {
		tc := tableChain{row.table, row.chain}
		if !seen[tc] {
			seen[tc] = true
			out = append(out, tc)
		}
	}
	return out
}

func (f family) rulesIn(tc tableChain) []Rule {
	var out []Rule
	for _, r := range f.rules {
		if r.Table == tc.table && r.Chain == tc.chain {
			out = append(out, r)
		}
	}
	return out
}

// ownComment returns the comment of an `iptables -S` line and whether it is
// one of ours.
func ownComment(line string) (string, bool) {
	if !strings.Contains(line, CommentPrefix) {
		return "", false
	}
	args, err := splitArgs(line)
	if err != nil {
		return "", false
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--comment" && strings.HasPrefix(args[i+1], CommentPrefix) {
			return args[i+1], true
		}
	}
	return "", false
}

// specOf turns an `iptables -S` line ("-A CHAIN spec...") into the spec
// that deletes it.
func specOf(line, chain string) ([]string, error) {
	args, err := splitArgs(line)
	if err != nil {
		return nil, err
	}
	if len(args) < 3 || args[0] != "-A" || args[1] != chain {
		return nil, fmt.Errorf("unexpected rule line %q", line)
	}
	return args[2:], nil
}

// splitArgs splits an iptables-save style line into arguments: spaces
// separate them, double quotes group, a backslash escapes the next character.
func splitArgs(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inArg = true
		case c == '"':
			quoted = !quoted
			inArg = true
		case c == ' ' && !quoted:
			if inArg {
				out = append(out, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		out = append(out, cur.String())
	}
	return out, nil
}
