package corefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// importDir writes files (name -> content) into a temporary directory and
// returns options whose Filename is a Corefile there.
func importDir(t *testing.T, files map[string]string) (string, ParseOptions) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := testOpts()
	opts.Filename = filepath.Join(dir, "Corefile")
	return dir, opts
}

func TestParseImports(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		text    string
		check   func(t *testing.T, cfg *Config)
		imports int
	}{
		{name: "snippet", text: "(common) {\n  errors\n  cache 30\n}\n. {\n  import common\n}\nexample.org {\n  import common\n  log\n}",
			check: func(t *testing.T, cfg *Config) {
				eq(t, len(cfg.Servers), 2)
				eq(t, cfg.Servers[0].Errors, true)
				eq(t, cfg.Servers[1].Cache.SuccessTTL.Seconds(), 30.0)
				eq(t, cfg.Servers[1].Log, true)
				eq(t, cfg.Servers[1].Line, 8)
			}},
		{name: "file relative to the Corefile", files: map[string]string{"conf/common.conf": "prometheus :9253\nerrors\n"},
			text: ". {\n  import conf/common.conf\n}", imports: 1,
			check: func(t *testing.T, cfg *Config) {
				eq(t, cfg.Servers[0].Prometheus, ":9253")
				eq(t, cfg.Servers[0].Errors, true)
			}},
		{name: "glob of server blocks", files: map[string]string{"zones/a.conf": "a.org {\n errors\n}\n", "zones/b.conf": "b.org {\n log\n}\n"},
			text: ". {\n}\nimport zones/*", imports: 2,
			check: func(t *testing.T, cfg *Config) {
				eq(t, len(cfg.Servers), 3)
				eq(t, cfg.Servers[1].Zones, []string{"a.org."})
				eq(t, cfg.Servers[2].Log, true)
			}},
		{name: "empty glob", text: ". {\n  import none/*\n}", check: func(t *testing.T, cfg *Config) { eq(t, len(cfg.Servers), 1) }},
		{name: "nested", files: map[string]string{"a.conf": "import b.conf\n", "b.conf": "errors\n"}, text: ". {\n  import a.conf\n}", imports: 2,
			check: func(t *testing.T, cfg *Config) { eq(t, cfg.Servers[0].Errors, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, opts := importDir(t, tc.files)
			cfg, err := Parse(tc.text, opts)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
			eq(t, len(cfg.Imports), tc.imports)
		})
	}
}

func TestParseImportRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
		files            map[string]string
	}{
		{name: "missing file", text: ". {\n  import other.conf\n}", want: "Corefile:2: File to import not found: other.conf"},
		{name: "directory", files: map[string]string{"d/x": ""}, text: ". {\n  import d\n}", want: "Corefile:2: import d: DIR/d is not a regular file"},
		{name: "device", text: ". {\n  import /dev/zero\n}", want: "Corefile:2: import /dev/zero: /dev/zero is not a regular file"},
		{name: "self import", files: map[string]string{"loop.conf": "import loop.conf\n"}, text: ". {\n  import loop.conf\n}", want: "DIR/loop.conf:1: import loop.conf: imports nested more than 10 deep..."},
		{name: "too large", files: map[string]string{"big.conf": "# " + strings.Repeat("x", MaxSize) + "\n"}, text: ". {\n  import big.conf\n}", want: "Corefile:2: import big.conf: the Corefile and its imports are larger than..."},
		{name: "error in imported file names it", files: map[string]string{"bad.conf": "errors\nfile db.example\n"}, text: ". {\n  import bad.conf\n}", want: `DIR/bad.conf:2: unknown plugin "file"`},
		{name: "bad option in imported file names it", files: map[string]string{"bad.conf": "cache {\n  keepttl 3\n}\n"}, text: ". {\n  import bad.conf\n}", want: `DIR/bad.conf:2: cache keepttl: wrong number of arguments...`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, opts := importDir(t, tc.files)
			_, err := Parse(tc.text, opts)
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if !strings.HasPrefix(want, dir) {
				want = filepath.Join(dir, want)
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Fatalf("error %q, want prefix %q", got, prefix)
				}
			} else if got != want {
				t.Fatalf("error %q, want %q", got, want)
			}
		})
	}
}

func TestImportsChanged(t *testing.T) {
	dir, opts := importDir(t, map[string]string{"c.conf": "errors\n"})
	cfg, err := Parse(". {\n  import c.conf\n}", opts)
	if err != nil {
		t.Fatal(err)
	}
	if ImportsChanged(cfg) {
		t.Fatal("changed right after parsing")
	}
	if err := os.WriteFile(filepath.Join(dir, "c.conf"), []byte("log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !ImportsChanged(cfg) {
		t.Fatal("a changed import not noticed")
	}
	os.Remove(filepath.Join(dir, "c.conf"))
	if !ImportsChanged(cfg) {
		t.Fatal("a removed import not noticed")
	}
}
