// Package resolvconf renders the resolv.conf that the kubelet (through the
// container runtime) writes into a pod with dnsPolicy None.
package resolvconf

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Render returns the resolv.conf text the kubelet would write for a pod with
// dnsPolicy None and the given dnsConfig: one "search" line (when there are
// search domains), one "nameserver" line per server and one "options" line
// (when there are options). Like the kubelet it drops duplicate servers and
// search domains, and merges options by name (the last value wins, the first
// position is kept). A nil cfg renders an empty file.
func Render(cfg *corev1.PodDNSConfig) string {
	if cfg == nil {
		return ""
	}
	var b strings.Builder
	if searches := dedup(cfg.Searches); len(searches) > 0 {
		b.WriteString("search ")
		b.WriteString(strings.Join(searches, " "))
		b.WriteByte('\n')
	}
	for _, ns := range dedup(cfg.Nameservers) {
		b.WriteString("nameserver ")
		b.WriteString(ns)
		b.WriteByte('\n')
	}
	if opts := FormatOptions(cfg.Options); len(opts) > 0 {
		b.WriteString("options ")
		b.WriteString(strings.Join(opts, " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// FormatOptions returns the options in resolv.conf syntax ("name" or
// "name:value"), merged by name: a later option replaces the value of an
// earlier one with the same name and keeps its position.
func FormatOptions(options []corev1.PodDNSConfigOption) []string {
	if len(options) == 0 {
		return nil
	}
	out := make([]string, 0, len(options))
	index := make(map[string]int, len(options))
	for _, o := range options {
		s := o.Name
		if o.Value != nil {
			s += ":" + *o.Value
		}
		if i, ok := index[o.Name]; ok {
			out[i] = s
			continue
		}
		index[o.Name] = len(out)
		out = append(out, s)
	}
	return out
}

func dedup(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}
