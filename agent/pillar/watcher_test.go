package pillar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// configMapVolume writes files the way the kubelet updates a ConfigMap
// volume: a timestamped directory, a ..data symlink to it swapped by
// renaming ..data_tmp over it, and per-key symlinks through ..data.
type configMapVolume struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMapVolume(t *testing.T, dir string, files map[string]string) *configMapVolume {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &configMapVolume{t: t, dir: dir}
	v.update(files)
	return v
}

func (v *configMapVolume) update(files map[string]string) {
	t := v.t
	t.Helper()
	v.gen++
	tsDir := fmt.Sprintf("..2026_11_21_01_00_%02d.%d", v.gen, v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, tsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(v.dir, tsDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(tsDir, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder collects the Watcher's callbacks.
type recorder struct {
	changes chan *corefile.Config
	errs    chan error
	mu      sync.Mutex
	fail    error // returned by OnChange when set
}

func newRecorder() *recorder {
	return &recorder{changes: make(chan *corefile.Config, 16), errs: make(chan error, 16)}
}

func (r *recorder) onChange(cfg *corefile.Config, text string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.changes <- cfg
	return nil
}

func (r *recorder) onError(err error) { r.errs <- err }

func (r *recorder) waitChange(t *testing.T) *corefile.Config {
	t.Helper()
	select {
	case cfg := <-r.changes:
		return cfg
	case err := <-r.errs:
		t.Fatalf("got error instead of a change: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no configuration change within 10s")
	}
	return nil
}

func (r *recorder) waitError(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.errs:
		return err
	case cfg := <-r.changes:
		t.Fatalf("got a change instead of an error: %+v", cfg)
	case <-time.After(10 * time.Second):
		t.Fatal("no error within 10s")
	}
	return nil
}

type fixture struct {
	tmpl, kubeDNS *configMapVolume
	out           string
	rec           *recorder
	opts          Options
}

func newFixture(t *testing.T, template string, kubeDNS map[string]string) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{
		tmpl:    newConfigMapVolume(t, filepath.Join(root, "coredns"), map[string]string{"Corefile.base": template}),
		kubeDNS: newConfigMapVolume(t, filepath.Join(root, "kube-dns"), kubeDNS),
		out:     filepath.Join(root, "Corefile"),
		rec:     newRecorder(),
	}
	f.opts = Options{
		Template:         filepath.Join(root, "coredns", "Corefile.base"),
		Output:           f.out,
		KubeDNSConfigDir: filepath.Join(root, "kube-dns"),
		Params: Params{LocalIPs: []string{"169.254.20.10"}, DNSPort: 53, ClusterDomain: "cluster.local",
			UpstreamSvc: "kube-dns-upstream", LookupEnv: upstreamEnv},
		Parse:    corefile.ParseOptions{ReadFile: fakeReadFile},
		OnChange: f.rec.onChange,
		OnError:  f.rec.onError,
	}
	return f
}

func (f *fixture) run(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func readOutput(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func rootBlock(t *testing.T, cfg *corefile.Config) corefile.Server {
	t.Helper()
	for _, s := range cfg.Servers {
		if s.Zones[0] == "." {
			return s
		}
	}
	t.Fatalf("no root block in %+v", cfg)
	return corefile.Server{}
}

func TestWatcherStartup(t *testing.T) {
	f := newFixture(t, officialTemplate(t), map[string]string{"stubDomains": `{"acme.local": ["192.0.2.7"]}`})
	w, err := NewWatcher(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, text := w.Config()
	if len(cfg.Servers) != 5 || cfg.Servers[4].Zones[0] != "acme.local." {
		t.Fatalf("startup config has %d servers: %+v", len(cfg.Servers), cfg.Servers)
	}
	if got := readOutput(t, f.out); got != text {
		t.Errorf("output file differs from the config in force:\n%s\n---\n%s", got, text)
	}
	if changed, err := w.Check(); changed || err != nil {
		t.Errorf("Check without changes = %v, %v", changed, err)
	}
}

func TestWatcherStartupErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tmpl   string
		mutate func(o *Options)
		want   string
	}{
		{"missing template", ". {\n}\n", func(o *Options) { o.Template += ".missing" }, "reading Corefile template"},
		{"missing env", officialTemplate(t), func(o *Options) { o.Params.LookupEnv = env(nil) }, "KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"},
		{"unknown plugin", ". {\n    errors\n    file db.example\n}\n", nil, `Corefile.base:3: unknown plugin "file"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.tmpl, nil)
			f.opts.Parse.Filename = "Corefile.base"
			if tc.mutate != nil {
				tc.mutate(&f.opts)
			}
			w, err := NewWatcher(f.opts)
			if err == nil {
				t.Fatalf("NewWatcher = %+v, want error %q", w, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestWatcherConfigMapSwap drives the real file-notification path with the
// kubelet's symlink swap: poll is set to an hour so only events can trigger.
func TestWatcherConfigMapSwap(t *testing.T) {
	tmpl := officialTemplate(t)
	f := newFixture(t, tmpl, map[string]string{})
	f.opts.PollInterval = time.Hour
	w, err := NewWatcher(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.run(t, w)
	before, beforeText := w.Config()
	if got := rootBlock(t, before).Cache.SuccessTTL; got != 30*time.Second {
		t.Fatalf("root cache TTL %s", got)
	}

	// 1. A new template: the root block caches for 10s.
	f.tmpl.update(map[string]string{"Corefile.base": strings.Replace(tmpl, ".:53 {\n    errors\n    cache 30", ".:53 {\n    errors\n    cache 10", 1)})
	cfg := f.rec.waitChange(t)
	if got := rootBlock(t, cfg).Cache.SuccessTTL; got != 10*time.Second {
		t.Errorf("after the swap root cache TTL is %s, want 10s", got)
	}
	inForce, text := w.Config()
	if inForce != cfg || text == beforeText || readOutput(t, f.out) != text {
		t.Error("the new configuration is not the one in force and in the output file")
	}

	// 2. A bad template is refused with its line; the old config stays.
	f.tmpl.update(map[string]string{"Corefile.base": tmpl + "\nexample.org {\n    chaos\n}\n"})
	err = f.rec.waitError(t)
	wantPos := fmt.Sprintf("Corefile:%d: ", strings.Count(tmpl, "\n")+3)
	if !strings.Contains(err.Error(), wantPos+`unknown plugin "chaos"`) {
		t.Errorf("error %q does not name the plugin and its line (%s)", err, wantPos)
	}
	if now, nowText := w.Config(); now != cfg || nowText != text || readOutput(t, f.out) != text {
		t.Error("a refused Corefile replaced the one in force")
	}

	// 3. The kube-dns ConfigMap gets upstreamNameservers (with the good
	// template back).
	f.tmpl.update(map[string]string{"Corefile.base": tmpl})
	f.rec.waitChange(t)
	f.kubeDNS.update(map[string]string{"upstreamNameservers": `["198.51.100.9"]`})
	cfg = f.rec.waitChange(t)
	if got := rootBlock(t, cfg).Forward.To; len(got) != 1 || got[0] != "198.51.100.9:53" {
		t.Errorf("root forward after upstreamNameservers: %v", got)
	}
	if got := rootBlock(t, cfg).Cache.SuccessTTL; got != 30*time.Second {
		t.Errorf("template change lost: cache TTL %s", got)
	}
}

func TestWatcherPollFallback(t *testing.T) {
	root := t.TempDir()
	tmplPath := filepath.Join(root, "Corefile.base")
	if err := os.WriteFile(tmplPath, []byte(". {\n    cache 30\n    forward . __PILLAR__CLUSTER__DNS__\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	w, err := NewWatcher(Options{
		Template: tmplPath, KubeDNSConfigDir: filepath.Join(root, "kube-dns"),
		Params:   Params{LocalIPs: []string{"169.254.20.10"}, UpstreamSvc: "kube-dns-upstream", LookupEnv: upstreamEnv},
		OnChange: rec.onChange, OnError: rec.onError,
		PollInterval: 20 * time.Millisecond, DisableNotify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{}
	f.run(t, w)
	// Replace the file atomically: polling must not see it half written.
	if err := os.WriteFile(tmplPath+".new", []byte(". {\n    cache 15\n    forward . __PILLAR__CLUSTER__DNS__\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmplPath+".new", tmplPath); err != nil {
		t.Fatal(err)
	}
	cfg := rec.waitChange(t)
	if got := cfg.Servers[0].Cache.SuccessTTL; got != 15*time.Second {
		t.Errorf("cache TTL %s, want 15s", got)
	}
	// The kube-dns ConfigMap directory appears later (optional volume).
	writeFiles(t, filepath.Join(root, "kube-dns"), map[string]string{"stubDomains": `{"acme.local": ["192.0.2.7"]}`})
	cfg = rec.waitChange(t)
	if len(cfg.Servers) != 2 || cfg.Servers[1].Zones[0] != "acme.local." {
		t.Errorf("stub domain not applied: %+v", cfg.Servers)
	}
	// A broken kube-dns ConfigMap is reported once and changes nothing.
	writeFiles(t, filepath.Join(root, "kube-dns"), map[string]string{"upstreamNameservers": `not json`})
	if err := rec.waitError(t); !strings.Contains(err.Error(), "upstreamNameservers") {
		t.Errorf("error %q does not name the key", err)
	}
	select {
	case err := <-rec.errs:
		t.Errorf("the same error was reported twice: %v", err)
	case <-time.After(200 * time.Millisecond): // ten polls
	}
	if now, _ := w.Config(); now != cfg {
		t.Error("a broken ConfigMap replaced the configuration")
	}
}

func TestWatcherOnChangeRefused(t *testing.T) {
	f := newFixture(t, officialTemplate(t), nil)
	w, err := NewWatcher(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeText := w.Config()
	f.rec.fail = errors.New("cannot bind")
	f.kubeDNS.update(map[string]string{"upstreamNameservers": `["198.51.100.9"]`})
	changed, err := w.Check()
	if changed || err == nil || !strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("Check = %v, %v; want the OnChange error", changed, err)
	}
	if now, text := w.Config(); now != before || text != beforeText || readOutput(t, f.out) != beforeText {
		t.Error("a configuration refused by OnChange is in force")
	}
	// The same text is not tried again; a new one is.
	if changed, err := w.Check(); changed || err != nil {
		t.Errorf("second Check of the refused text = %v, %v", changed, err)
	}
	f.rec.fail = nil
	f.kubeDNS.update(map[string]string{"upstreamNameservers": `["198.51.100.10"]`})
	if changed, err := w.Check(); !changed || err != nil {
		t.Fatalf("Check after a new change = %v, %v", changed, err)
	}
	if got := rootBlock(t, <-f.rec.changes).Forward.To[0]; got != "198.51.100.10:53" {
		t.Errorf("forward to %s", got)
	}
}

// TestWatcherNoReload: without the reload plugin (and no PollInterval),
// changes are not applied, as in CoreDNS.
func TestWatcherNoReload(t *testing.T) {
	f := newFixture(t, ". {\n    forward . 192.0.2.1\n}\n", nil)
	w, err := NewWatcher(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	f.tmpl.update(map[string]string{"Corefile.base": ". {\n    forward . 192.0.2.2\n}\n"})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case cfg := <-f.rec.changes:
		t.Errorf("change applied without reload: %+v", cfg)
	default:
	}
}

// TestWatcherDirect: without a template, the -conf Corefile is served as it
// is and watched (node-cache runs CoreDNS on it unchanged).
func TestWatcherDirect(t *testing.T) {
	root := t.TempDir()
	conf := filepath.Join(root, "Corefile")
	text := ". {\n    reload\n    forward . 192.0.2.1\n}\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	w, err := NewWatcher(Options{
		Template: filepath.Join(root, "missing", "Corefile.base"), Output: conf,
		Params:   Params{LocalIPs: []string{"169.254.20.10"}},
		OnChange: rec.onChange, OnError: rec.onError, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !w.Direct() {
		t.Fatal("Direct() = false without a template")
	}
	if _, got := w.Config(); got != text {
		t.Errorf("config text %q, want %q", got, text)
	}
	f := &fixture{}
	f.run(t, w)
	next := strings.Replace(text, "192.0.2.1", "192.0.2.2", 1)
	if err := os.WriteFile(conf+".new", []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(conf+".new", conf); err != nil {
		t.Fatal(err)
	}
	cfg := rec.waitChange(t)
	if got := cfg.Servers[0].Forward.To[0]; got != "192.0.2.2:53" {
		t.Errorf("forward to %s after the edit", got)
	}
	if got := readOutput(t, conf); got != next {
		t.Errorf("the Corefile was rewritten: %q", got)
	}
}
