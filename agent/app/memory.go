package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// MemoryLimitAuto is the default of -memory-limit: the container's cgroup
// memory limit (v2 memory.max, v1 memory.limit_in_bytes).
const MemoryLimitAuto = "auto"

// noCgroupLimit is at or above what cgroup v1 reports for "no limit".
const noCgroupLimit = 1 << 62

// memoryPlan is how the agent divides its memory limit.
type memoryPlan struct {
	// Limit is the memory limit the plan is for (0: none known).
	Limit int64
	// GoLimit is the Go runtime's soft memory limit (0: leave it).
	GoLimit int64
	// Budget bounds the in-flight work of the DNS server.
	Budget int64
	// CacheBytes bounds the entries of all caches together.
	CacheBytes int64
}

// planMemory divides limit: the Go runtime's limit at 85% of it (room for
// what the runtime does not count: thread stacks, the binary), a quarter
// for in-flight work and a quarter for the caches' entries. Without a
// limit the server's and the caches' defaults apply.
func planMemory(limit int64) memoryPlan {
	if limit <= 0 {
		return memoryPlan{}
	}
	return memoryPlan{Limit: limit, GoLimit: limit / 100 * 85, Budget: limit / 4, CacheBytes: limit / 4}
}

// parseMemoryLimit reads -memory-limit: "auto", "0" (none), or a
// quantity (134217728, 128Mi, 128M).
func parseMemoryLimit(s string) (auto bool, limit int64, err error) {
	if s == MemoryLimitAuto {
		return true, 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return false, 0, fmt.Errorf("-memory-limit %q: want auto, 0 or a quantity such as 128Mi: %w", s, err)
	}
	v, ok := q.AsInt64()
	if !ok || v < 0 {
		return false, 0, fmt.Errorf("-memory-limit %q: want auto, 0 or a quantity such as 128Mi", s)
	}
	if v > 0 && v < MinMemoryLimit {
		return false, 0, fmt.Errorf("-memory-limit %q: below the minimum of %dMi", s, MinMemoryLimit>>20)
	}
	return false, v, nil
}

// MinMemoryLimit is the smallest -memory-limit accepted.
const MinMemoryLimit = 32 << 20

// cgroupMemoryLimit returns the memory limit of this process's cgroup
// under root (/sys/fs/cgroup) as /proc/self/cgroup names it, v2 or v1;
// 0 when there is none.
func cgroupMemoryLimit(root, procCgroup string) (int64, error) {
	f, err := os.Open(procCgroup)
	if err != nil {
		return 0, fmt.Errorf("memory limit: %w", err)
	}
	defer f.Close()
	var candidates []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			candidates = append(candidates, filepath.Join(root, parts[2], "memory.max"), filepath.Join(root, "memory.max"))
		case hasController(parts[1], "memory"): // v1
			candidates = append(candidates, filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"), filepath.Join(root, "memory", "memory.limit_in_bytes"))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("memory limit: %s: %w", procCgroup, err)
	}
	// In a container the cgroup namespace makes the own cgroup the root;
	// outside one the path names it. The first file that exists counts.
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("memory limit: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("memory limit: %s: %q: %w", p, v, err)
		}
		if n >= noCgroupLimit {
			return 0, nil
		}
		return n, nil
	}
	return 0, nil
}

func hasController(list, name string) bool {
	return slices.Contains(strings.Split(list, ","), name)
}

// applyGoLimit sets the Go runtime's soft memory limit unless GOMEMLIMIT
// is set in the environment (then the operator decided).
func applyGoLimit(p memoryPlan) {
	if p.GoLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(p.GoLimit)
	}
}

// releaser gives memory back to the system after spikes: the runtime keeps
// freed heap for a while and returns it slowly, so after a burst of work
// the RSS would stay high for minutes. Every releaseCheck it looks at the
// server's budget and the heap: when a spike of in-flight work (more than
// a sixteenth of the budget) is over (under a 32nd), or the heap holds more
// free memory than releaseFree, it returns the free memory at once
// (debug.FreeOSMemory, at most every releaseEvery).
type releaser struct {
	use    func() (limit, used, peak int64)
	free   func()
	spiked bool
	last   time.Time
	sample []metrics.Sample
}

const (
	releaseCheck = time.Second
	releaseEvery = 5 * time.Second
	releaseFree  = 8 << 20
)

func newReleaser(use func() (limit, used, peak int64)) *releaser {
	return &releaser{use: use, free: debug.FreeOSMemory, sample: []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}}
}

// run checks every releaseCheck until ctx is done.
func (r *releaser) run(ctx context.Context) {
	t := time.NewTicker(releaseCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.check(now)
		}
	}
}

// check releases memory when a spike ended or the heap holds much free
// memory; it reports whether it did.
func (r *releaser) check(now time.Time) bool {
	limit, used, peak := r.use()
	if peak > limit/16 {
		r.spiked = true
	}
	metrics.Read(r.sample)
	var free uint64
	if r.sample[0].Value.Kind() == metrics.KindUint64 {
		free = r.sample[0].Value.Uint64()
	}
	due := (r.spiked && used < limit/32) || free > releaseFree
	if !due || now.Sub(r.last) < releaseEvery {
		return false
	}
	r.spiked = false
	r.last = now
	r.free()
	return true
}
