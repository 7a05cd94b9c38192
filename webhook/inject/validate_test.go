package inject

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestValidateDNS(t *testing.T) {
	many := func(n int, f func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		policy  corev1.DNSPolicy
		cfg     *corev1.PodDNSConfig
		wantErr string
	}{
		{name: "cluster first without config", policy: corev1.DNSClusterFirst},
		{name: "none without config", policy: corev1.DNSNone, wantErr: "required"},
		{name: "none without nameservers", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Searches: []string{"a"}}, wantErr: "at least one"},
		{name: "bad policy", policy: "Sometimes", wantErr: "not supported"},
		{name: "valid none", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Nameservers: []string{"1.2.3.4", "fd00::1"}, Searches: []string{"a.b.", "c"}, Options: []corev1.PodDNSConfigOption{{Name: "edns0"}}}},
		{name: "four nameservers", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"}}, wantErr: "at most 3"},
		{name: "nameserver not an ip", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Nameservers: []string{"dns.example"}}, wantErr: "not a valid IP"},
		{name: "nameserver with zone", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Nameservers: []string{"fe80::1%eth0"}}, wantErr: "zone"},
		{name: "nameserver with leading zero", policy: corev1.DNSNone, cfg: &corev1.PodDNSConfig{Nameservers: []string{"010.0.0.1"}}, wantErr: "not a valid IP"},
		{name: "33 searches", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Searches: many(33, func(i int) string { return fmt.Sprintf("d%d", i) })}, wantErr: "at most 32"},
		{name: "2049 characters", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Searches: many(11, func(i int) string {
			return strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 59)
		})}, wantErr: "characters"},
		{name: "2048 characters", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Searches: append(many(10, func(i int) string {
			return strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 59)
		}), strings.Repeat("d", 37))}},
		{name: "underscore search", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Searches: []string{"_srv.example"}}, wantErr: "searches[0]"},
		{name: "dot search", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Searches: []string{"."}}, wantErr: "searches[0]"},
		{name: "empty option name", policy: corev1.DNSClusterFirst, cfg: &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: ""}}}, wantErr: "options[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateDNS(tc.policy, tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}
