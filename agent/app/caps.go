package app

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nodelocaldns/nodelocaldns/agent/iptables"
)

// errNoNetRaw is returned when the legacy iptables backend is chosen but
// the agent lacks CAP_NET_RAW: the legacy iptables ABI talks to the kernel
// through a raw socket, which NET_ADMIN alone does not open (iptables-legacy
// fails with "Permission denied (you must be root)"); the nft backend uses
// netlink and needs NET_ADMIN only.
var errNoNetRaw = errors.New("the legacy iptables backend needs the NET_RAW capability " +
	"(its kernel interface is a raw socket): add NET_RAW to the agent container " +
	"(manifests/components/iptables-legacy), or use -iptables-backend=nft")

// checkNetRaw refuses the legacy backend without CAP_NET_RAW, and notes
// that auto-detection could not read the legacy tables without it.
func checkNetRaw(chosen, asked string, has func(capability int) (bool, error), logf func(string, ...any)) error {
	raw, err := has(unix.CAP_NET_RAW)
	if err != nil || raw {
		return nil // unknown: let iptables itself report
	}
	if chosen == iptables.BackendLegacy {
		return errNoNetRaw
	}
	if asked == iptables.BackendAuto {
		logf("without NET_RAW the legacy iptables tables cannot be read, so detection only saw nft; on a node whose kube-proxy uses iptables-legacy, add NET_RAW and -iptables-backend=legacy")
	}
	return nil
}

// hasCapability reports whether the process has capability in its
// effective set (/proc/self/status CapEff).
func hasCapability(capability int) (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, fmt.Errorf("capabilities: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("capabilities: CapEff %q: %w", v, err)
			}
			return bits&(1<<uint(capability)) != 0, nil
		}
	}
	return false, errors.New("capabilities: no CapEff in /proc/self/status")
}
