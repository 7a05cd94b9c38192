package app

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nodelocaldns/nodelocaldns/agent/iptables"
	"github.com/nodelocaldns/nodelocaldns/tests/netns"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

func TestCheckNetRaw(t *testing.T) {
	with := func(has bool) func(int) (bool, error) {
		return func(c int) (bool, error) {
			if c != unix.CAP_NET_RAW {
				t.Fatalf("asked for capability %d", c)
			}
			return has, nil
		}
	}
	var logged []string
	logf := func(f string, _ ...any) { logged = append(logged, f) }
	if err := checkNetRaw(iptables.BackendLegacy, iptables.BackendAuto, with(false), logf); !errors.Is(err, errNoNetRaw) {
		t.Errorf("legacy without NET_RAW: %v, want errNoNetRaw", err)
	}
	if err := checkNetRaw(iptables.BackendLegacy, iptables.BackendLegacy, with(true), logf); err != nil {
		t.Errorf("legacy with NET_RAW: %v", err)
	}
	if err := checkNetRaw(iptables.BackendNFT, iptables.BackendNFT, with(false), logf); err != nil || len(logged) != 0 {
		t.Errorf("nft asked, without NET_RAW: %v, logged %q", err, logged)
	}
	if err := checkNetRaw(iptables.BackendNFT, iptables.BackendAuto, with(false), logf); err != nil || len(logged) != 1 {
		t.Errorf("auto chose nft without NET_RAW: %v, logged %q (want a note)", err, logged)
	}
	if ok, err := hasCapability(unix.CAP_NET_ADMIN); err != nil || ok != (os.Geteuid() == 0) {
		t.Errorf("hasCapability(NET_ADMIN) = %v, %v as uid %d", ok, err, os.Geteuid())
	}
}

// TestLegacyIPTablesNeedsNetRaw shows on the real binaries what checkNetRaw
// assumes: without CAP_NET_RAW iptables-legacy cannot read a table, and
// iptables-nft can (in a fresh network namespace).
func TestLegacyIPTablesNeedsNetRaw(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bin := range []string{"setpriv", "iptables-legacy", "iptables-nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Unavailable(t, bin+" not installed")
		}
	}
	run := func(bin string) (string, error) {
		var out []byte
		var err error
		if nerr := netns.RunInFresh(func() {
			out, err = exec.Command("setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", bin, "-t", "raw", "-L", "-n").CombinedOutput()
		}); nerr != nil {
			return "", nerr
		}
		return string(out), err
	}
	if out, err := run("iptables-legacy"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("iptables-legacy without NET_RAW: %v\n%s\nwant Permission denied", err, out)
	}
	if out, err := run("iptables-nft"); err != nil {
		t.Errorf("iptables-nft without NET_RAW: %v\n%s", err, out)
	}
}
