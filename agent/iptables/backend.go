package iptables

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	goiptables "github.com/coreos/go-iptables/iptables"
)

// Backends accepted by -iptables-backend.
const (
	BackendAuto   = "auto"
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// hintChains are the chains the kubelet and kube-proxy create in the mangle
// table of the backend they use; their presence settles the choice.
var hintChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"}

// SaveFunc runs `<binary> [args]` (an iptables-save variant) and returns its
// output. Errors mean "this backend has nothing".
type SaveFunc func(binary string, args ...string) (string, error)

// Detect picks the backend the node's kube-proxy uses, the way Kubernetes'
// iptables-wrappers does: a backend whose mangle table holds the kubelet's
// hint chains wins; otherwise the one holding more KUBE-* rules, then more
// rules at all; a tie (e.g. an empty node) means nft, the default of current
// distributions.
func Detect(save SaveFunc) string {
	for _, b := range []string{BackendNFT, BackendLegacy} {
		for _, fam := range []string{"iptables", "ip6tables"} {
			out, err := save(fam+"-"+b+"-save", "-t", "mangle")
			if err != nil {
				continue
			}
			for _, hint := range hintChains {
				if strings.Contains(out, ":"+hint+" ") {
					return b
				}
			}
		}
	}
	kube := map[string]int{}
	all := map[string]int{}
	for _, b := range []string{BackendNFT, BackendLegacy} {
		for _, fam := range []string{"iptables", "ip6tables"} {
			out, err := save(fam + "-" + b + "-save")
			if err != nil {
				continue
			}
			for line := range strings.SplitSeq(out, "\n") {
				if !strings.HasPrefix(line, "-") {
					continue
				}
				all[b]++
				if strings.Contains(line, "KUBE-") {
					kube[b]++
				}
			}
		}
	}
	switch {
	case kube[BackendLegacy] > kube[BackendNFT]:
		return BackendLegacy
	case kube[BackendLegacy] < kube[BackendNFT]:
		return BackendNFT
	case all[BackendLegacy] > all[BackendNFT]:
		return BackendLegacy
	default:
		return BackendNFT
	}
}

// ExecSave is the SaveFunc that runs the real binaries, each bounded by
// timeout.
func ExecSave(timeout time.Duration) SaveFunc {
	return func(binary string, args ...string) (string, error) {
		path, err := exec.LookPath(binary)
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, args...).Output()
		return string(out), err
	}
}

// NewRunners returns the iptables and ip6tables runners of backend (v6 is nil
// when ip6tables is unusable) of backend ("nft",
// "legacy", or "auto" to Detect it). waitSeconds bounds how long a command
// waits for the xtables lock (`--wait N`). When the backend-specific binary is
// missing, the plain `iptables`/`ip6tables` is used. The chosen backend is
// returned for the log.
func NewRunners(backend string, waitSeconds int, save SaveFunc) (v4, v6 Runner, chosen string, err error) {
	switch backend {
	case BackendAuto, "":
		chosen = Detect(save)
	case BackendNFT, BackendLegacy:
		chosen = backend
	default:
		return nil, nil, "", fmt.Errorf("iptables: unknown backend %q (want auto, nft or legacy)", backend)
	}
	if waitSeconds <= 0 {
		return nil, nil, "", fmt.Errorf("iptables: lock wait must be positive, got %d s", waitSeconds)
	}
	mk := func(cmd string, proto goiptables.Protocol) (Runner, error) {
		path := cmd + "-" + chosen
		if _, err := exec.LookPath(path); err != nil {
			path = cmd
		}
		ipt, err := goiptables.New(goiptables.IPFamily(proto), goiptables.Timeout(waitSeconds), goiptables.Path(path))
		if err != nil {
			return nil, fmt.Errorf("iptables: %s: %w", path, err)
		}
		return ipt, nil
	}
	if v4, err = mk("iptables", goiptables.ProtocolIPv4); err != nil {
		return nil, nil, chosen, err
	}
	// A node without ip6tables can still serve IPv4: v6 stays nil and New
	// refuses IPv6 local IPs with a clear error.
	if v6, err = mk("ip6tables", goiptables.ProtocolIPv6); err != nil {
		v6 = nil
	}
	return v4, v6, chosen, nil
}
