// Package sysctl owns the kernel settings the agent applies on its node:
// the per-destination ICMP error rate limits (net.ipv4.icmp_ratelimit and
// net.ipv6.icmp.ratelimit). With the kernel's default (1000 ms, a burst of
// 6), a pod whose node-local cache was killed gets an immediate ICMP port
// unreachable only for its first few queries, and waits the resolver timeout
// for the others; with 0 every query to the dead cache fails at once and the
// pod's resolver moves to kube-dns.
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultRoot is where the kernel exposes its settings. /proc/sys/net shows
// the settings of the network namespace of the process that opens the file.
const DefaultRoot = "/proc/sys"

// Paths of the ICMP rate limits, relative to the root.
const (
	ICMPRateLimitV4 = "net/ipv4/icmp_ratelimit"
	ICMPRateLimitV6 = "net/ipv6/icmp/ratelimit"
	// ipv6Dir exists only when the kernel has IPv6 (and it is not disabled
	// at boot).
	ipv6Dir = "net/ipv6"
)

// Setting is one kernel setting: a file below the root and its wanted value.
type Setting struct {
	// Path is relative to the root, e.g. "net/ipv4/icmp_ratelimit".
	Path string
	// Value is what is written, e.g. "0".
	Value string
}

// Result says what Ensure did.
type Result struct {
	// Changed are the settings that held another value and were written,
	// as "path: old -> new".
	Changed []string
}

// ICMPRateLimit returns the settings of the ICMP rate limits for ms
// milliseconds: the IPv4 one always, the IPv6 one when root has net/ipv6.
func ICMPRateLimit(root string, ms int) ([]Setting, error) {
	if ms < 0 {
		return nil, fmt.Errorf("icmp rate limit %d ms: must not be negative", ms)
	}
	v := strconv.Itoa(ms)
	out := []Setting{{Path: ICMPRateLimitV4, Value: v}}
	if _, err := os.Stat(filepath.Join(root, ipv6Dir)); err == nil {
		out = append(out, Setting{Path: ICMPRateLimitV6, Value: v})
	}
	return out, nil
}

// Ensure makes every setting below root hold its value: it reads each file
// and writes only those that differ, so that running it every sync costs
// reads only and the result tells whether someone changed a value. It
// tries every setting and returns all failures joined.
func Ensure(root string, settings []Setting) (Result, error) {
	var res Result
	var errs []error
	for _, s := range settings {
		p := filepath.Join(root, s.Path)
		cur, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		old := strings.TrimSpace(string(cur))
		if old == s.Value {
			continue
		}
		if err := os.WriteFile(p, []byte(s.Value+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("set %s to %s: %w", p, s.Value, err))
			continue
		}
		res.Changed = append(res.Changed, fmt.Sprintf("%s: %s -> %s", s.Path, old, s.Value))
	}
	return res, errors.Join(errs...)
}

// EnsureICMPRateLimit sets both ICMP rate limits below root to ms
// milliseconds (see ICMPRateLimit and Ensure).
func EnsureICMPRateLimit(root string, ms int) (Result, error) {
	settings, err := ICMPRateLimit(root, ms)
	if err != nil {
		return Result{}, err
	}
	return Ensure(root, settings)
}
