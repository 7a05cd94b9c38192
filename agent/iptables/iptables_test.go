package iptables

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/tests/netns"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// fakeRunner keeps chains in memory in `iptables -S` form and records every
// call. It is the recording implementation the unit tests use instead of the
// real binaries.
type fakeRunner struct {
	chains map[string][]string // "table/chain" -> rule specs (args joined)
	calls  []string
	failOn string // an operation ("list", "insert", "delete") that fails
	failer error
}

func newFake() *fakeRunner { return &fakeRunner{chains: map[string][]string{}} }

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"") {
			a = `"` + strings.ReplaceAll(a, `"`, `\"`) + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func (f *fakeRunner) List(table, chain string) ([]string, error) {
	f.calls = append(f.calls, "list "+table+"/"+chain)
	if f.failOn == "list" {
		return nil, f.failer
	}
	out := []string{"-P " + chain + " ACCEPT"}
	for _, spec := range f.chains[table+"/"+chain] {
		out = append(out, "-A "+chain+" "+spec)
	}
	return out, nil
}

func (f *fakeRunner) Insert(table, chain string, pos int, spec ...string) error {
	f.calls = append(f.calls, fmt.Sprintf("insert %s/%s %d", table, chain, pos))
	if f.failOn == "insert" {
		return f.failer
	}
	k := table + "/" + chain
	f.chains[k] = append([]string{quoteArgs(spec)}, f.chains[k]...)
	return nil
}

func (f *fakeRunner) Delete(table, chain string, spec ...string) error {
	f.calls = append(f.calls, "delete "+table+"/"+chain)
	if f.failOn == "delete" {
		return f.failer
	}
	k := table + "/" + chain
	want := quoteArgs(spec)
	for i, s := range f.chains[k] {
		if s == want {
			f.chains[k] = append(f.chains[k][:i:i], f.chains[k][i+1:]...)
			return nil
		}
	}
	return errors.New("iptables: Bad rule (does a matching rule exist in that chain?)")
}

func (f *fakeRunner) total() int {
	n := 0
	for _, specs := range f.chains {
		n += len(specs)
	}
	return n
}

var (
	linkLocal = net.ParseIP("169.254.20.10")
	kubeDNS   = net.ParseIP("10.96.0.10")
	v6Local   = net.ParseIP("fd00::10")
)

func TestRuleTable(t *testing.T) {
	rules := Rules(linkLocal, 53, 8080)
	if len(rules) != len(ruleTable) {
		t.Fatalf("%d rules, want %d", len(rules), len(ruleTable))
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if !strings.HasPrefix(r.Comment, CommentPrefix) || seen[r.Comment] {
			t.Errorf("comment %q not unique or without prefix", r.Comment)
		}
		seen[r.Comment] = true
		joined := strings.Join(r.Spec, " ")
		if !strings.Contains(joined, "169.254.20.10") || !strings.Contains(joined, "-m comment --comment") {
			t.Errorf("rule %v lacks the IP or the comment", r)
		}
	}
	for _, tc := range []struct {
		name, table, chain, want string
	}{
		{name: "notrack incoming udp", table: "raw", chain: "PREROUTING", want: "-p udp -d 169.254.20.10 --dport 53"},
		{name: "notrack incoming tcp", table: "raw", chain: "PREROUTING", want: "-p tcp -d 169.254.20.10 --dport 53"},
		{name: "accept incoming udp", table: "filter", chain: "INPUT", want: "-p udp -d 169.254.20.10 --dport 53"},
		{name: "accept answers", table: "filter", chain: "OUTPUT", want: "-p udp -s 169.254.20.10 --sport 53"},
		{name: "notrack answers", table: "raw", chain: "OUTPUT", want: "-p tcp -s 169.254.20.10 --sport 53"},
		{name: "notrack node-local queries", table: "raw", chain: "OUTPUT", want: "-p udp -d 169.254.20.10 --dport 53"},
		{name: "notrack health probe", table: "raw", chain: "OUTPUT", want: "-p tcp -d 169.254.20.10 --dport 8080"},
		{name: "notrack health answer", table: "raw", chain: "OUTPUT", want: "-p tcp -s 169.254.20.10 --sport 8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range rules {
				if r.Table == tc.table && r.Chain == tc.chain && strings.HasPrefix(strings.Join(r.Spec, " "), tc.want) {
					return
				}
			}
			t.Errorf("no %s/%s rule starting with %q", tc.table, tc.chain, tc.want)
		})
	}
}

func TestEnsureAndRemove(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ips        []net.IP
		want4      int
		want6      int
		preinstall func(v4, v6 *fakeRunner)
		noPrune    bool // a twin instance is live: keep others' rules
		wantIns    int
		wantDel    int
	}{
		{name: "empty node", ips: []net.IP{linkLocal}, want4: 12, wantIns: 12},
		{name: "interception", ips: []net.IP{linkLocal, kubeDNS}, want4: 24, wantIns: 24},
		{name: "dual stack", ips: []net.IP{linkLocal, v6Local}, want4: 12, want6: 12, wantIns: 24},
		{
			name: "leftovers adopted", ips: []net.IP{linkLocal}, want4: 12, wantIns: 0,
			preinstall: func(v4, _ *fakeRunner) { install(v4, Rules(linkLocal, 53, 8080)) },
		},
		{
			name: "duplicates removed", ips: []net.IP{linkLocal}, want4: 12, wantIns: 0, wantDel: 24,
			preinstall: func(v4, _ *fakeRunner) {
				for range 3 {
					install(v4, Rules(linkLocal, 53, 8080))
				}
			},
		},
		{
			name: "stale rules of ours removed, foreign rules kept", ips: []net.IP{linkLocal}, want4: 13, wantIns: 12, wantDel: 12,
			preinstall: func(v4, _ *fakeRunner) {
				install(v4, Rules(net.ParseIP("169.254.99.99"), 53, 8080))
				v4.chains["filter/INPUT"] = append(v4.chains["filter/INPUT"], "-p tcp --dport 22 -j ACCEPT")
			},
		},
		{
			name: "twin's rules kept once without prune", ips: []net.IP{linkLocal}, want4: 24, wantIns: 12, wantDel: 12, noPrune: true,
			preinstall: func(v4, _ *fakeRunner) {
				install(v4, Rules(net.ParseIP("169.254.99.99"), 53, 8080))
				install(v4, Rules(net.ParseIP("169.254.99.99"), 53, 8080))
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v4, v6 := newFake(), newFake()
			if tc.preinstall != nil {
				tc.preinstall(v4, v6)
			}
			m, err := New(Config{IPs: tc.ips, DNSPort: 53, HealthPort: 8080, V4: v4, V6: v6})
			if err != nil {
				t.Fatal(err)
			}
			ch, err := m.Ensure(!tc.noPrune)
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if ch.Inserted != tc.wantIns || ch.Deleted != tc.wantDel {
				t.Errorf("Ensure changes %+v, want inserted %d deleted %d", ch, tc.wantIns, tc.wantDel)
			}
			if v4.total() != tc.want4 || v6.total() != tc.want6 {
				t.Errorf("rules v4 %d v6 %d, want %d %d", v4.total(), v6.total(), tc.want4, tc.want6)
			}
			// Many more syncs change nothing.
			for i := range 5 {
				ch, err = m.Ensure(!tc.noPrune)
				if err != nil || ch != (Changes{}) {
					t.Fatalf("sync %d: changes %+v, err %v; want none", i, ch, err)
				}
			}
			if n, err := m.Present(); err != nil || n != tc.want4+tc.want6-foreignRules(v4) {
				t.Errorf("Present = %d, %v; want %d", n, err, tc.want4+tc.want6-foreignRules(v4))
			}
			if _, err := m.Remove(); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			foreign := foreignRules(v4)
			if v4.total() != foreign || v6.total() != 0 {
				t.Errorf("after Remove: v4 %d v6 %d rules, want %d 0", v4.total(), v6.total(), foreign)
			}
		})
	}
}

func TestErrorsCounted(t *testing.T) {
	for _, tc := range []struct {
		name, failOn, msg, wantType string
	}{
		{name: "lock held", failOn: "list", msg: "Another app is currently holding the xtables lock. Stopped waiting after 5s.", wantType: "iptables_lock"},
		{name: "insert fails", failOn: "insert", msg: "iptables: No chain/target/match by that name.", wantType: "iptables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			errs, err := NewSetupErrors(reg)
			if err != nil {
				t.Fatal(err)
			}
			if n := testutil.CollectAndCount(errs); n != len(SetupErrorTypes) {
				t.Errorf("%d series before any error, want %d zero series", n, len(SetupErrorTypes))
			}
			v4 := newFake()
			v4.failOn, v4.failer = tc.failOn, errors.New(tc.msg)
			m, err := New(Config{IPs: []net.IP{linkLocal}, DNSPort: 53, HealthPort: 8080, V4: v4, Errors: errs})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Ensure(true); err == nil {
				t.Fatal("Ensure succeeded, want the runner's error")
			}
			if got := testutil.ToFloat64(errs.WithLabelValues(tc.wantType)); got < 1 {
				t.Errorf("errortype %q counted %v times, want >= 1", tc.wantType, got)
			}
			// The same counter is found again, not registered twice.
			again, err := NewSetupErrors(reg)
			if err != nil || again != errs {
				t.Errorf("second NewSetupErrors = %p, %v; want the same counter", again, err)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "no ips", cfg: Config{DNSPort: 53, HealthPort: 8080, V4: newFake()}},
		{name: "bad port", cfg: Config{IPs: []net.IP{linkLocal}, DNSPort: 0, HealthPort: 8080, V4: newFake()}},
		{name: "ipv6 without ip6tables", cfg: Config{IPs: []net.IP{v6Local}, DNSPort: 53, HealthPort: 8080, V4: newFake()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}

func TestDetect(t *testing.T) {
	const kubeRules = "-A KUBE-SERVICES -j KUBE-NODEPORTS\n-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-X\n"
	for _, tc := range []struct {
		name  string
		saves map[string]string
		want  string
	}{
		{name: "empty node defaults to nft", saves: map[string]string{}, want: BackendNFT},
		{name: "hint chain in legacy", saves: map[string]string{"iptables-legacy-save -t mangle": ":KUBE-IPTABLES-HINT - [0:0]\n"}, want: BackendLegacy},
		{name: "canary in nft", saves: map[string]string{"iptables-nft-save -t mangle": ":KUBE-KUBELET-CANARY - [0:0]\n", "iptables-legacy-save": kubeRules}, want: BackendNFT},
		{name: "kube-proxy rules in legacy", saves: map[string]string{"iptables-legacy-save": kubeRules, "iptables-nft-save": "-A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\n"}, want: BackendLegacy},
		{name: "kube-proxy rules in nft ipv6", saves: map[string]string{"ip6tables-nft-save": kubeRules}, want: BackendNFT},
		{name: "more plain rules in legacy", saves: map[string]string{"iptables-legacy-save": "-A INPUT -j ACCEPT\n"}, want: BackendLegacy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Detect(func(bin string, args ...string) (string, error) {
				out, ok := tc.saves[strings.Join(append([]string{bin}, args...), " ")]
				if !ok {
					return "", errors.New("not found")
				}
				return out, nil
			})
			if got != tc.want {
				t.Errorf("Detect = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSplitArgs(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       []string
		wantErr    bool
	}{
		{name: "plain", line: "-A INPUT -p udp -j ACCEPT", want: []string{"-A", "INPUT", "-p", "udp", "-j", "ACCEPT"}},
		{name: "quoted comment", line: `-A INPUT -m comment --comment "nodelocaldns: a b" -j ACCEPT`, want: []string{"-A", "INPUT", "-m", "comment", "--comment", "nodelocaldns: a b", "-j", "ACCEPT"}},
		{name: "escaped quote", line: `--comment "say \"hi\""`, want: []string{"--comment", `say "hi"`}},
		{name: "unterminated", line: `--comment "oops`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitArgs(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRealIptables runs the Manager against the real iptables binaries of
// both backends inside a fresh network namespace.
func TestRealIptables(t *testing.T) {
	testenv.RequireRoot(t)
	for _, backend := range []string{BackendNFT, BackendLegacy} {
		t.Run(backend, func(t *testing.T) {
			inFreshNetns(t, func() {
				v4, v6, chosen, err := NewRunners(backend, 5, ExecSave(5e9))
				if err != nil || chosen != backend || v6 == nil {
					t.Errorf("NewRunners(%s) = %q, v6 %v, %v", backend, chosen, v6 != nil, err)
					return
				}
				m, err := New(Config{IPs: []net.IP{linkLocal, v6Local}, DNSPort: 53, HealthPort: 8080, V4: v4, V6: v6})
				if err != nil {
					t.Error(err)
					return
				}
				if ch, err := m.Ensure(true); err != nil || ch.Inserted != 24 {
					t.Errorf("first Ensure = %+v, %v; want 24 inserted", ch, err)
					return
				}
				// A duplicate added by hand (what `iptables -C` bugs produce)
				// is deleted again by the next sync.
				r := m.Rules()[0]
				if err := v4.Insert(r.Table, r.Chain, 1, r.Spec...); err != nil {
					t.Error(err)
				}
				if ch, err := m.Ensure(true); err != nil || ch.Deleted != 1 || ch.Inserted != 0 {
					t.Errorf("Ensure with a duplicate = %+v, %v; want 1 deleted", ch, err)
				}
				for range 3 {
					if ch, err := m.Ensure(true); err != nil || ch != (Changes{}) {
						t.Errorf("idle Ensure = %+v, %v", ch, err)
					}
				}
				if n, err := m.Present(); err != nil || n != 24 {
					t.Errorf("Present = %d, %v; want 24", n, err)
				}
				if _, err := m.Remove(); err != nil {
					t.Errorf("Remove: %v", err)
				}
				if n, err := m.Present(); err != nil || n != 0 {
					t.Errorf("Present after Remove = %d, %v; want 0", n, err)
				}
			})
		})
	}
	// auto follows the kubelet's hint chain to the backend kube-proxy uses.
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		t.Run("auto finds "+backend, func(t *testing.T) {
			inFreshNetns(t, func() {
				if out, err := exec.Command("iptables-"+backend, "-t", "mangle", "-N", "KUBE-IPTABLES-HINT").CombinedOutput(); err != nil {
					t.Errorf("create hint chain: %v: %s", err, out)
					return
				}
				if _, _, chosen, err := NewRunners(BackendAuto, 5, ExecSave(5e9)); err != nil || chosen != backend {
					t.Errorf("auto chose %q, %v; want %s", chosen, err, backend)
				}
			})
		})
	}
	if _, _, _, err := NewRunners("bogus", 5, ExecSave(5e9)); err == nil {
		t.Error("NewRunners accepted an unknown backend")
	}
}

func install(f *fakeRunner, rules []Rule) {
	for _, r := range rules {
		_ = f.Insert(r.Table, r.Chain, 1, r.Spec...)
	}
}

// foreignRules counts the rules in f that are not the agent's.
func foreignRules(f *fakeRunner) int {
	n := 0
	for _, specs := range f.chains {
		for _, spec := range specs {
			if !strings.Contains(spec, CommentPrefix) {
				n++
			}
		}
	}
	return n
}

// inFreshNetns runs fn on an OS thread moved into a new network namespace;
// commands started from fn inherit it. The thread stays locked and is thrown
// away by the runtime afterwards.
func inFreshNetns(t *testing.T, fn func()) {
	t.Helper()
	if err := netns.RunInFresh(fn); err != nil {
		t.Fatal(err)
	}
}
