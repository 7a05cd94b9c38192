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
	// as "path: old -> new" (new as read back from the kernel).
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

// Ensurer keeps settings at their values. The kernel may store a value in
// another form than the one written (the ICMP rate limits are kept in
// jiffies: with HZ=250, 7 ms reads back as 8), so the Ensurer remembers what
// each setting read back after its write and accepts that form too;
// otherwise every sync would see a change. An Ensurer is not safe for
// concurrent use.
type Ensurer struct {
	root     string
	settings []Setting
	// kernelForm maps a path to the value it read back after a write.
	kernelForm map[string]string
}

// NewEnsurer returns an Ensurer of settings below root.
func NewEnsurer(root string, settings []Setting) *Ensurer {
	return &Ensurer{root: root, settings: settings, kernelForm: map[string]string{}}
}

// NewICMPRateLimit returns an Ensurer of both ICMP rate limits below root
// (see ICMPRateLimit).
func NewICMPRateLimit(root string, ms int) (*Ensurer, error) {
	settings, err := ICMPRateLimit(root, ms)
	if err != nil {
		return nil, err
	}
	return NewEnsurer(root, settings), nil
}

// Ensure makes every setting hold its value: it reads each file and writes
// only those that differ, so that running it every sync costs reads only
// and the result tells whether someone changed a value. It tries every
// setting and returns all failures joined.
func (e *Ensurer) Ensure() (Result, error) {
	var res Result
	var errs []error
	for _, s := range e.settings {
		p := filepath.Join(e.root, s.Path)
		old, err := readValue(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if old == s.Value || old == e.kernelForm[s.Path] {
			continue
		}
		if err := os.WriteFile(p, []byte(s.Value+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("set %s to %s: %w", p, s.Value, err))
			continue
		}
		now, err := readValue(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.kernelForm[s.Path] = now
		res.Changed = append(res.Changed, fmt.Sprintf("%s: %s -> %s", s.Path, old, now))
	}
	return res, errors.Join(errs...)
}

func readValue(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Ensure makes every setting below root hold its value once (see
// (*Ensurer).Ensure).
func Ensure(root string, settings []Setting) (Result, error) {
	return NewEnsurer(root, settings).Ensure()
}

// EnsureICMPRateLimit sets both ICMP rate limits below root to ms
// milliseconds once (see ICMPRateLimit and Ensure).
func EnsureICMPRateLimit(root string, ms int) (Result, error) {
	settings, err := ICMPRateLimit(root, ms)
	if err != nil {
		return Result{}, err
	}
	return Ensure(root, settings)
}
