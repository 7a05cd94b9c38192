package hostile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/tests/agent"
)

// TestSoak (make soak, not in CI: HOSTILE_SOAK=10m) runs valid traffic
// and the attacks of TestHostile in turn for the given duration, and
// checks that the agent's RSS and goroutines stay flat: measured whenever
// no work is in flight, the highest of the last third may exceed the
// highest of the first third by at most 5 MB and 20 goroutines.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("HOSTILE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set HOSTILE_SOAK to a duration (make soak) to run the soak test")
	}
	e := setup(t)
	pid := e.agent.PID()
	type sample struct {
		at         time.Duration
		rss        int64
		goroutines float64
	}
	var samples []sample
	var seq atomic.Int64
	attacks := []func(ctx context.Context){
		func(ctx context.Context) {
			tcpPipeline(ctx, attacker(1), 50, 32, func(i int) string { return fmt.Sprintf("s%d-%d.hole.example.", seq.Add(1), i) }, dns.TypeA)
		},
		func(ctx context.Context) {
			tcpPipeline(ctx, attacker(2), 8, 4, func(int) string { return fmt.Sprintf("s%d.big.test.", seq.Add(1)) }, dns.TypeTXT)
		},
		func(ctx context.Context) {
			conns := holdIdle(ctx, attacker(3), 300)
			victimTCP(ctx, 2*time.Second)
			for _, c := range conns {
				c.Close()
			}
		},
		func(ctx context.Context) {
			udpFlood(ctx, attacker(4), 2000, 6000, func(i int) []byte {
				return packQuery(fmt.Sprintf("s%d-%d.hole.example.", seq.Add(1), i), dns.TypeA)
			}, nil)
		},
		func(ctx context.Context) {
			udpFlood(ctx, attacker(5), 5000, 15000, func(i int) []byte {
				return packQuery(fmt.Sprintf("s%d-%d.default.svc.cluster.local.", i, rand.N(1<<30)), dns.TypeA)
			}, nil)
		},
		func(ctx context.Context) { udpFlood(ctx, attacker(6), 4000, 12000, garbage, nil) },
	}
	start := time.Now()
	v := startVictim(e)
	for i := 0; time.Since(start) < d; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		attacks[i%len(attacks)](ctx)
		cancel()
		// Wait until nothing is in flight (misses to the dead upstream
		// time out after 5 s), then measure.
		quiet := time.Now().Add(15 * time.Second)
		var text string
		for time.Now().Before(quiet) {
			text = e.agent.MetricsText(t)
			if agent.MetricSum(text, "nodelocaldns_server_budget_used_bytes") == 0 {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		time.Sleep(time.Second)
		cur, _ := rss(pid)
		s := sample{at: time.Since(start), rss: cur, goroutines: agent.MetricSum(e.agent.MetricsText(t), "go_goroutines")}
		samples = append(samples, s)
		t.Logf("%6.0fs: RSS %.1f MB, %v goroutines", s.at.Seconds(), mb(s.rss), s.goroutines)
		if exited, err := e.agent.Exited(); exited {
			t.Fatalf("the agent exited: %v", err)
		}
	}
	v.end(t)
	if len(samples) < 6 {
		t.Fatalf("only %d samples in %s", len(samples), d)
	}
	third := len(samples) / 3
	peak := func(ss []sample) (int64, float64) {
		var r int64
		var g float64
		for _, s := range ss {
			r, g = max(r, s.rss), max(g, s.goroutines)
		}
		return r, g
	}
	r0, g0 := peak(samples[:third])
	r1, g1 := peak(samples[len(samples)-third:])
	t.Logf("first third: RSS <= %.1f MB, <= %v goroutines; last third: RSS <= %.1f MB, <= %v goroutines", mb(r0), g0, mb(r1), g1)
	if r1 > r0+5<<20 {
		t.Errorf("RSS grew from %.1f MB to %.1f MB", mb(r0), mb(r1))
	}
	if g1 > g0+20 {
		t.Errorf("goroutines grew from %v to %v", g0, g1)
	}
}
