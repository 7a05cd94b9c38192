package hostile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/tests/agent"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// TestMemoryLimitFromCgroup runs the agent (without -memory-limit) in a
// memory cgroup of the test's own with a 96 MiB limit, v1 or v2 as the
// machine has, and checks that it sized itself from it, as it does in a
// container.
func TestMemoryLimitFromCgroup(t *testing.T) {
	requireNetns(t)
	const limit = 96 << 20
	name := fmt.Sprintf("nodelocaldns-hostile-%d", os.Getpid())
	var dir, limitFile string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil { // v2
		dir, limitFile = filepath.Join("/sys/fs/cgroup", name), "memory.max"
	} else if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil { // v1
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes"
	} else {
		testenv.Unavailable(t, "no memory cgroup controller mounted at /sys/fs/cgroup")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("cannot create a memory cgroup: %v", err))
	}
	t.Cleanup(func() {
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ { // empty once the agent exited
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(fmt.Sprint(limit)), 0); err != nil {
		t.Fatalf("set the cgroup's limit: %v", err)
	}
	a := agent.StartAgent(t, agent.AgentOptions{
		Bin: agentBin, LocalIP: "127.0.11.10", ClusterDNS: clusterIP,
		Upstreams: []string{holeIP + ":53"}, Template: template(t),
		// Enter the cgroup, then become the agent.
		Prefix: []string{"sh", "-c", `echo $$ > "` + filepath.Join(dir, "cgroup.procs") + `" && exec "$0" "$@"`},
	})
	want := "memory limit 96Mi: Go runtime limit 81Mi, in-flight budget 24Mi, caches 24Mi"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(a.Log(), want) {
		if exited, err := a.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("the agent did not log %q (exited %v: %v):\n%s", want, exited, err, a.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
