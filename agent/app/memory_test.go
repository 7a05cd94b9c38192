package app

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cgroup string
		files  map[string]string
		want   int64
	}{
		{"v2 in a cgroup namespace", "0::/\n", map[string]string{"memory.max": "178257920\n"}, 178257920},
		{"v2 by path", "0::/kubepods/pod1/c1\n", map[string]string{"kubepods/pod1/c1/memory.max": "67108864\n", "memory.max": "max\n"}, 67108864},
		{"v2 unlimited", "0::/\n", map[string]string{"memory.max": "max\n"}, 0},
		{"v1", "12:cpu,cpuacct:/x\n7:memory:/kubepods/c1\n", map[string]string{"memory/kubepods/c1/memory.limit_in_bytes": "134217728\n"}, 134217728},
		{"v1 namespaced", "7:memory:/\n", map[string]string{"memory/memory.limit_in_bytes": "134217728\n"}, 134217728},
		{"v1 unlimited", "7:memory:/\n", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"no memory controller", "3:cpu:/\n", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "sys")
			for p, v := range tc.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			proc := filepath.Join(dir, "cgroup")
			if err := os.WriteFile(proc, []byte(tc.cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := cgroupMemoryLimit(root, proc)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("limit %d, want %d", got, tc.want)
			}
		})
	}
	if _, err := cgroupMemoryLimit(t.TempDir(), "/nonexistent/cgroup"); err == nil {
		t.Fatal("a missing /proc/self/cgroup gave no error")
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		auto    bool
		want    int64
		wantErr bool
	}{
		{"auto", true, 0, false},
		{"0", false, 0, false},
		{"128Mi", false, 128 << 20, false},
		{"100M", false, 100_000_000, false},
		{"67108864", false, 64 << 20, false},
		{"1Mi", false, 0, true}, // below the minimum
		{"-5Mi", false, 0, true},
		{"lots", false, 0, true},
	} {
		auto, got, err := parseMemoryLimit(tc.in)
		if (err != nil) != tc.wantErr || auto != tc.auto || (err == nil && got != tc.want) {
			t.Errorf("parseMemoryLimit(%q) = %v, %d, %v; want %v, %d, error %v", tc.in, auto, got, err, tc.auto, tc.want, tc.wantErr)
		}
	}
}

func TestPlanMemory(t *testing.T) {
	p := planMemory(128 << 20)
	if p.GoLimit <= p.Budget+p.CacheBytes || p.GoLimit >= p.Limit {
		t.Fatalf("plan %+v: the Go limit must be below the limit and above budget + caches", p)
	}
	if (planMemory(0) != memoryPlan{}) {
		t.Fatal("no limit must leave the defaults")
	}
}

// TestReleaser: memory is returned once a spike of in-flight work is over,
// not during it, and not more often than releaseEvery.
func TestReleaser(t *testing.T) {
	var used, peak int64
	freed := 0
	r := newReleaser(func() (int64, int64, int64) { return 32 << 20, used, peak })
	r.free = func() { freed++ }
	now := time.Now()
	step := func() bool { now = now.Add(releaseCheck); return r.check(now) }
	used, peak = 20<<20, 20<<20
	if step() && freed > 0 {
		// the heap may hold free memory already; only count from here
		freed = 0
	}
	freed = 0
	r.last = now
	if step() && r.sample[0].Value.Uint64() <= releaseFree {
		t.Fatal("released during the spike")
	}
	used, peak = 0, 0
	for i := 0; i < 10 && freed == 0; i++ {
		step()
	}
	if freed != 1 {
		t.Fatalf("released %d times after the spike ended, want 1", freed)
	}
	last := r.last
	step()
	if r.last != last && r.last.Sub(last) < releaseEvery {
		t.Fatal("released again within releaseEvery")
	}
}

// TestCgroupMemoryLimitHere reads this machine's own cgroup: whatever it
// is, v1 or v2, limited or not, it must parse.
func TestCgroupMemoryLimitHere(t *testing.T) {
	if _, err := os.Stat("/proc/self/cgroup"); err != nil {
		t.Skip("no /proc/self/cgroup")
	}
	limit, err := cgroupMemoryLimit("/sys/fs/cgroup", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this process's cgroup memory limit: %d bytes (0: none)", limit)
}
