package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// loopScript runs $2 parallel loops of `getent ahosts` over the names in $3
// for $1 seconds in a client pod (glibc's resolver, through the pod's
// resolv.conf), one line per lookup: "start end rc" in /proc/uptime seconds
// (10 ms resolution), then prints every line.
const loopScript = `dur=$1; par=$2; names=$3
read up _ < /proc/uptime; end=$(( ${up%.*} + dur ))
i=0
while [ $i -lt $par ]; do
  ( while read t0 _ < /proc/uptime; [ ${t0%.*} -lt $end ]; do
      for n in $names; do
        getent ahosts $n >/dev/null; rc=$?
        read t1 _ < /proc/uptime; echo "$t0 $t1 $rc $n"; t0=$t1
      done
    done > /tmp/loop.$i ) &
  i=$((i+1))
done
wait
cat /tmp/loop.*
rm -f /tmp/loop.*`

// loopStats summarises a loop's lines.
type loopStats struct {
	total, failed int
	slowest       time.Duration
	rate          float64 // lookups per second
	p99           time.Duration
	// slow are the lookups that took 500 ms or more: "at uptime U: name
	// took D (rc R)", for the report.
	slow []string
	// starts and lats are each lookup's start (uptime seconds) and duration.
	starts []float64
	lats   []time.Duration
}

// slowestBefore is the slowest lookup that started before uptime t: the
// machine's own noise when t is the moment of a disruption.
func (s loopStats) slowestBefore(t float64) time.Duration {
	var m time.Duration
	for i, t0 := range s.starts {
		if t0 < t && s.lats[i] > m {
			m = s.lats[i]
		}
	}
	return m
}

func (s loopStats) String() string {
	return fmt.Sprintf("%d lookups (%.0f/s), %d failed, slowest %s, p99 %s",
		s.total, s.rate, s.failed, s.slowest.Round(10*time.Millisecond), s.p99.Round(10*time.Millisecond))
}

func parseLoop(out string, dur time.Duration) (loopStats, error) {
	var s loopStats
	var lat []time.Duration
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		t0, err0 := strconv.ParseFloat(f[0], 64)
		t1, err1 := strconv.ParseFloat(f[1], 64)
		if err0 != nil || err1 != nil {
			return s, fmt.Errorf("bad loop line %q", l)
		}
		d := time.Duration(math.Round((t1-t0)*1000)) * time.Millisecond
		lat = append(lat, d)
		s.starts = append(s.starts, t0)
		s.lats = append(s.lats, d)
		s.total++
		if f[2] != "0" {
			s.failed++
		}
		if d > s.slowest {
			s.slowest = d
		}
		if d >= 500*time.Millisecond && len(s.slow) < 20 {
			name := ""
			if len(f) > 3 {
				name = f[3]
			}
			s.slow = append(s.slow, fmt.Sprintf("at %.2f: %s took %s (rc %s)", t0, name, d, f[2]))
		}
	}
	if s.total == 0 {
		return s, fmt.Errorf("no lookups in the loop's output %q", out)
	}
	slices.Sort(lat)
	s.p99 = lat[(len(lat)*99)/100]
	if dur > 0 {
		s.rate = float64(s.total) / dur.Seconds()
	}
	return s, nil
}

// lookupLoop runs the loop in a pod for dur; the result arrives on the
// returned channel when it ends.
func (e *env) lookupLoop(ctx context.Context, ns, pod string, dur time.Duration, par int, names ...string) <-chan loopResult {
	ch := make(chan loopResult, 1)
	go func() {
		out, err := e.exec(ctx, ns, pod, "sh", "-c", loopScript, "loop",
			strconv.Itoa(int(dur.Seconds())), strconv.Itoa(par), strings.Join(names, " "))
		if err != nil {
			ch <- loopResult{err: err}
			return
		}
		s, err := parseLoop(out, dur)
		ch <- loopResult{stats: s, err: err}
	}()
	return ch
}

type loopResult struct {
	stats loopStats
	err   error
}

// uptime is the host's /proc/uptime in seconds (the clock of the loops'
// lines); 0 when unreadable.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
