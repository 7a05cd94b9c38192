package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestWritePIDFileNeverEmpty: a reader of -pidfile racing the agent's
// writes sees either no file or the whole process ID, never an empty or
// partial file (the agent/app tests read it as soon as it exists), and no
// temporary file is left beside it.
func TestWritePIDFileNeverEmpty(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.pid")
	a := &agent{opts: &Options{PIDFile: path}}
	want := strconv.Itoa(os.Getpid()) + "\n"
	stop, errc := make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(errc)
		for reads := 0; ; reads++ {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil || string(b) != want {
				errc <- fmt.Errorf("read %d: pidfile %q, %w; want %q", reads, b, err, want)
				return
			}
		}
	}()
	for i := range 300 {
		if err := a.writePIDFile(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Error(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "agent.pid" {
		t.Errorf("directory holds %v, %v; want only agent.pid", ents, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("pidfile mode %v, %v; want 0644", st, err)
	}
}
