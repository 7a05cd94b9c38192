package pillar

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadKubeDNSConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string // nil: the directory does not exist
		want  *KubeDNSConfig
	}{
		{name: "missing directory", files: nil, want: &KubeDNSConfig{}},
		{name: "empty directory", files: map[string]string{}, want: &KubeDNSConfig{}},
		{name: "empty files", files: map[string]string{"stubDomains": "", "upstreamNameservers": "\n"}, want: &KubeDNSConfig{}},
		{
			name:  "both keys, other keys ignored",
			files: map[string]string{"stubDomains": `{"acme.local": ["1.2.3.4", "1.2.3.5:5353"]}`, "upstreamNameservers": `["8.8.8.8", "[2001:db8::1]:53"]`, "federations": `{"x": "y"}`},
			want: &KubeDNSConfig{
				StubDomains:         map[string][]string{"acme.local": {"1.2.3.4", "1.2.3.5:5353"}},
				UpstreamNameservers: []string{"8.8.8.8", "[2001:db8::1]:53"},
			},
		},
		{name: "JSON null", files: map[string]string{"upstreamNameservers": "null"}, want: &KubeDNSConfig{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "kube-dns")
			writeFiles(t, dir, tc.files)
			got, err := LoadKubeDNSConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if got, err := LoadKubeDNSConfig(""); err != nil || !reflect.DeepEqual(got, &KubeDNSConfig{}) {
		t.Errorf(`LoadKubeDNSConfig("") = %+v, %v`, got, err)
	}
}

func TestLoadKubeDNSConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"upstreams not JSON", map[string]string{"upstreamNameservers": "8.8.8.8"}, "kube-dns ConfigMap upstreamNameservers: want a JSON list"},
		{"stubs not a map", map[string]string{"stubDomains": `["a"]`}, "kube-dns ConfigMap stubDomains: want a JSON map"},
		{"too many upstreams", map[string]string{"upstreamNameservers": `["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4"]`}, "at most 3 entries, got 4"},
		{"upstream hostname", map[string]string{"upstreamNameservers": `["dns.google"]`}, `nameserver "dns.google" is not an IP address or IP:port`},
		{"upstream port 0", map[string]string{"upstreamNameservers": `["1.1.1.1:0"]`}, `nameserver "1.1.1.1:0"`},
		{"stub bad domain", map[string]string{"stubDomains": `{"Acme.Local": ["1.2.3.4"]}`}, `invalid domain name "Acme.Local"`},
		{"stub domain with trailing dot", map[string]string{"stubDomains": `{"acme.local.": ["1.2.3.4"]}`}, `invalid domain name "acme.local."`},
		{"stub no servers", map[string]string{"stubDomains": `{"acme.local": []}`}, `domain "acme.local" has no nameservers`},
		{"stub bad server", map[string]string{"stubDomains": `{"acme.local": ["ns.acme.local"]}`}, `domain "acme.local": nameserver "ns.acme.local"`},
		{"oversized file", map[string]string{"stubDomains": strings.Repeat(" ", maxConfigFile+1)}, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			got, err := LoadKubeDNSConfig(dir)
			if err == nil {
				t.Fatalf("got %+v, want error %q", got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if files == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		// Atomically, so that a polling Watcher never reads half a file.
		tmp := filepath.Join(dir, "."+name+".new")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}
