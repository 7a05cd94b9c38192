package iptables

import (
	"strings"
	"testing"
)

// FuzzSplitArgs feeds arbitrary `iptables -S` lines to the parser that reads
// the agent's rules back: it never panics, and what it returns, quoted the
// way iptables prints it, parses back to the same arguments.
func FuzzSplitArgs(f *testing.F) {
	for _, seed := range []string{
		`-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment "nodelocaldns: no conntrack for queries to the cache udp to 169.254.20.10:53" -j NOTRACK`,
		`-A INPUT -m comment --comment "say \"hi\"" -j ACCEPT`,
		`--comment "unterminated`,
		`\`,
		``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args, err := splitArgs(line)
		if err != nil {
			return
		}
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		again, err := splitArgs(strings.Join(quoted, " "))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", quoted, err)
		}
		if strings.Join(again, "\x00") != strings.Join(args, "\x00") {
			t.Fatalf("round trip %q -> %q", args, again)
		}
		_, _ = ownComment(line)
	})
}
