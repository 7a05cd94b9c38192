package pillar

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// TestWatcherImportedFileChange: a change of a file the Corefile imports
// (the Corefile's text unchanged) is noticed by the poll and applied.
func TestWatcherImportedFileChange(t *testing.T) {
	root := t.TempDir()
	conf := filepath.Join(root, "Corefile")
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, name+".new"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(root, name+".new"), filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("Corefile", ". {\n    reload\n    import upstream.conf\n}\n")
	write("upstream.conf", "forward . 192.0.2.1\n")
	rec := newRecorder()
	w, err := NewWatcher(Options{
		Template: filepath.Join(root, "missing", "Corefile.base"), Output: conf,
		Params:   Params{LocalIPs: []string{"169.254.20.10"}},
		Parse:    corefile.ParseOptions{Filename: conf},
		OnChange: rec.onChange, OnError: rec.onError, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := w.Config(); cfg.Servers[0].Forward.To[0] != "192.0.2.1:53" {
		t.Fatalf("forward to %v", cfg.Servers[0].Forward.To)
	}
	f := &fixture{}
	f.run(t, w)
	time.Sleep(100 * time.Millisecond) // polls of an unchanged configuration change nothing
	select {
	case cfg := <-rec.changes:
		t.Fatalf("change without an edit: %+v", cfg)
	default:
	}
	write("upstream.conf", "forward . 192.0.2.2\n")
	cfg := rec.waitChange(t)
	if got := cfg.Servers[0].Forward.To[0]; got != "192.0.2.2:53" {
		t.Errorf("forward to %s after the imported file changed", got)
	}
	write("upstream.conf", "forward . not-an-address\n")
	if err := rec.waitError(t); err == nil {
		t.Fatal("no error for a bad imported file")
	}
}
