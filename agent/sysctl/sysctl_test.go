package sysctl

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeRoot builds a /proc/sys-like tree with the given files and values.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, v := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func read(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestEnsureICMPRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		files       map[string]string
		ms          int
		wantChanged []string
		want        map[string]string
		wantErr     string
	}{
		{
			name:        "dual stack defaults set to 0",
			files:       map[string]string{ICMPRateLimitV4: "1000\n", ICMPRateLimitV6: "1000\n"},
			ms:          0,
			wantChanged: []string{ICMPRateLimitV4 + ": 1000 -> 0", ICMPRateLimitV6 + ": 1000 -> 0"},
			want:        map[string]string{ICMPRateLimitV4: "0", ICMPRateLimitV6: "0"},
		},
		{
			name:  "already set: nothing written",
			files: map[string]string{ICMPRateLimitV4: "0\n", ICMPRateLimitV6: "0\n"},
			ms:    0,
			want:  map[string]string{ICMPRateLimitV4: "0", ICMPRateLimitV6: "0"},
		},
		{
			name:        "only the changed one is rewritten",
			files:       map[string]string{ICMPRateLimitV4: "250\n", ICMPRateLimitV6: "100\n"},
			ms:          100,
			wantChanged: []string{ICMPRateLimitV4 + ": 250 -> 100"},
			want:        map[string]string{ICMPRateLimitV4: "100", ICMPRateLimitV6: "100"},
		},
		{
			name:        "no net/ipv6: IPv4 only",
			files:       map[string]string{ICMPRateLimitV4: "1000\n"},
			ms:          0,
			wantChanged: []string{ICMPRateLimitV4 + ": 1000 -> 0"},
			want:        map[string]string{ICMPRateLimitV4: "0"},
		},
		{
			name:        "missing ipv4 file is an error, ipv6 still set",
			files:       map[string]string{ICMPRateLimitV6: "1000\n"},
			ms:          0,
			want:        map[string]string{ICMPRateLimitV6: "0"},
			wantChanged: []string{ICMPRateLimitV6 + ": 1000 -> 0"},
			wantErr:     "icmp_ratelimit",
		},
		{
			name:    "negative value",
			files:   map[string]string{ICMPRateLimitV4: "1000\n"},
			ms:      -1,
			want:    map[string]string{ICMPRateLimitV4: "1000"},
			wantErr: "negative",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.files)
			res, err := EnsureICMPRateLimit(root, tc.ms)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(res.Changed, tc.wantChanged) {
				t.Errorf("Changed = %q, want %q", res.Changed, tc.wantChanged)
			}
			for p, v := range tc.want {
				if got := read(t, root, p); got != v {
					t.Errorf("%s = %q, want %q", p, got, v)
				}
			}
		})
	}
}

// TestEnsureReadOnly: a read-only /proc/sys (a container without
// privileges) gives an error naming the file, and nothing panics.
func TestEnsureReadOnly(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root ignores file modes: make the setting a directory, which
		// cannot be read or written as a file.
		root := fakeRoot(t, map[string]string{ICMPRateLimitV4: "1000\n"})
		p := filepath.Join(root, ICMPRateLimitV4)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Ensure(root, []Setting{{Path: ICMPRateLimitV4, Value: "0"}})
		if err == nil || !strings.Contains(err.Error(), "icmp_ratelimit") {
			t.Fatalf("error %v, want one naming icmp_ratelimit", err)
		}
		return
	}
	root := fakeRoot(t, map[string]string{ICMPRateLimitV4: "1000\n"})
	p := filepath.Join(root, ICMPRateLimitV4)
	if err := os.Chmod(p, 0o444); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(root, []Setting{{Path: ICMPRateLimitV4, Value: "0"}})
	if err == nil || !strings.Contains(err.Error(), "icmp_ratelimit") {
		t.Fatalf("error %v, want one naming icmp_ratelimit", err)
	}
	if got := read(t, root, ICMPRateLimitV4); got != "1000" {
		t.Errorf("value %q after a failed write, want 1000", got)
	}
}

// TestEnsurerKernelForm: a value the kernel stores in another form (7 ms
// reads back as 8 with HZ=250) is written once, not at every sync; a real
// change by someone else is written again.
func TestEnsurerKernelForm(t *testing.T) {
	root := fakeRoot(t, map[string]string{ICMPRateLimitV4: "1000\n"})
	e, err := NewICMPRateLimit(root, 7)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, ICMPRateLimitV4)
	res, err := e.Ensure()
	if err != nil || len(res.Changed) != 1 {
		t.Fatalf("first Ensure: %v, %v; want one change", res.Changed, err)
	}
	// The kernel rounds to jiffies: a fake tree cannot, so store the
	// rounded value and the form the Ensurer would have read back.
	if err := os.WriteFile(p, []byte("8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kernelForm[ICMPRateLimitV4] = "8"
	for i := range 3 {
		res, err := e.Ensure()
		if err != nil || len(res.Changed) != 0 {
			t.Fatalf("sync %d: changed %v, %v; want no write of the kernel's form", i, res.Changed, err)
		}
	}
	if err := os.WriteFile(p, []byte("1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = e.Ensure()
	if err != nil || len(res.Changed) != 1 || read(t, root, ICMPRateLimitV4) != "7" {
		t.Fatalf("after a change by hand: changed %v, %v, value %s; want it set again", res.Changed, err, read(t, root, ICMPRateLimitV4))
	}
}
