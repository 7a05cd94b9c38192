package node

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInjectionShutdownUnderLoad: SIGTERM to the last agent while glibc
// clients in the pod look names up (A and AAAA in parallel, as getaddrinfo
// does) without pause: none fails and none waits more than one resolver
// timeout. Answering after the address was removed lost answers, and a
// client that had its A answer but not its AAAA one waited a second timeout:
// 2 s lookups on a real node (tests/e2e check 4) before the agent stopped
// answering before its teardown in injection mode.
func TestInjectionShutdownUnderLoad(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	a := c.startAgent("-lameduck=2s") // the default, as in the DaemonSet
	c.expectResolves(clusterName, clusterAddr)
	const par, seconds = 4, 4
	script := `end=$1; i=0
while [ $i -lt ` + strconv.Itoa(par) + ` ]; do
  ( while read t0 _ < /proc/uptime; [ ${t0%.*} -lt $end ]; do
      getent ahosts ` + clusterFQDN + `. >/dev/null; rc=$?
      read t1 _ < /proc/uptime; echo "$t0 $t1 $rc"
    done > /tmp/nld-shutdown-loop.$$.$i ) &
  i=$((i+1))
done
wait; cat /tmp/nld-shutdown-loop.$$.*; rm -f /tmp/nld-shutdown-loop.$$.*`
	up := readUptime(t)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.in(c.pod, "sh", "-c", script, "loop", strconv.Itoa(int(up)+seconds))
		done <- result{out, err}
	}()
	time.Sleep(1500 * time.Millisecond)
	took := a.term()
	r := <-done
	if r.err != nil {
		t.Fatalf("lookup loop: %v: %s", r.err, r.out)
	}
	total, failed, slowest, slow := 0, 0, time.Duration(0), []string(nil)
	for l := range strings.SplitSeq(strings.TrimSpace(r.out), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		t0, err0 := strconv.ParseFloat(f[0], 64)
		t1, err1 := strconv.ParseFloat(f[1], 64)
		if err0 != nil || err1 != nil {
			t.Fatalf("bad loop line %q", l)
		}
		d := time.Duration(math.Round((t1-t0)*1000)) * time.Millisecond
		total++
		if f[2] != "0" {
			failed++
		}
		slowest = max(slowest, d)
		if d >= 500*time.Millisecond {
			slow = append(slow, fmt.Sprintf("%.2f+%s", t0, d))
		}
	}
	t.Logf("SIGTERM under load: %d lookups, %d failed, slowest %v, exit after %v; slow: %v", total, failed, slowest, took, slow)
	if total < 20 {
		t.Fatalf("only %d lookups in %ds", total, seconds)
	}
	if failed > 0 || slowest > fallbackBound {
		t.Errorf("%d lookups failed, slowest %v (want 0, at most %v)", failed, slowest, fallbackBound)
	}
	c.expectNodeState(false)
}

func readUptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
