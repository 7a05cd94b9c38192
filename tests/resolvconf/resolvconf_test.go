package resolvconf

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *corev1.PodDNSConfig
		want string
	}{
		{name: "nil", cfg: nil, want: ""},
		{name: "empty", cfg: &corev1.PodDNSConfig{}, want: ""},
		{
			name: "injected",
			cfg: &corev1.PodDNSConfig{
				Nameservers: []string{"169.254.20.10", "10.96.0.10"},
				Searches:    []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
				Options: []corev1.PodDNSConfigOption{
					{Name: "ndots", Value: new("3")}, {Name: "timeout", Value: new("1")},
					{Name: "attempts", Value: new("2")}, {Name: "edns0"},
				},
			},
			want: "search default.svc.cluster.local svc.cluster.local cluster.local\n" +
				"nameserver 169.254.20.10\nnameserver 10.96.0.10\n" +
				"options ndots:3 timeout:1 attempts:2 edns0\n",
		},
		{
			name: "duplicates merged",
			cfg: &corev1.PodDNSConfig{
				Nameservers: []string{"1.1.1.1", "1.1.1.1", "fd00::1"},
				Searches:    []string{"a.example", "a.example", "b.example"},
				Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: new("5")}, {Name: "rotate"}, {Name: "ndots", Value: new("1")}},
			},
			want: "search a.example b.example\nnameserver 1.1.1.1\nnameserver fd00::1\noptions ndots:1 rotate\n",
		},
		{
			name: "only nameservers",
			cfg:  &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}},
			want: "nameserver 10.0.0.10\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Render(tc.cfg); got != tc.want {
				t.Errorf("Render() =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
