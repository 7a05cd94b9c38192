package pillar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// debounce is how long the watcher waits after the last file event before
// rendering: a ConfigMap update is a burst of events (new directory,
// ..data_tmp symlink, rename over ..data, removal of the old directory).
const debounce = 100 * time.Millisecond

// tmpSuffix marks the temporary file Output is written through.
const tmpSuffix = ".tmp-"

// Options configure a Watcher.
type Options struct {
	// Template is the Corefile template (-basecorefile). When it does not
	// exist at start but Output does, Output is served as it is and
	// watched instead (node-cache then runs CoreDNS on -conf unchanged).
	Template string
	// Output is where the rendered Corefile is written (-conf); "" means
	// not written. It is replaced atomically and only by Corefiles that
	// parse, so it always shows the configuration in force.
	Output string
	// KubeDNSConfigDir is the kube-dns ConfigMap directory (-kubednscm);
	// "" disables it, a missing directory means no ConfigMap (yet).
	KubeDNSConfigDir string
	// Params are the rendering inputs; Params.KubeDNS is filled by the
	// Watcher from KubeDNSConfigDir.
	Params Params
	// Parse are the options of corefile.Parse.
	Parse corefile.ParseOptions
	// OnChange receives each new configuration that parses, with its text.
	// When it returns an error the configuration is not in force: the old
	// one stays and the error is reported.
	OnChange func(cfg *corefile.Config, text string) error
	// OnError receives the errors of background checks (bad template, bad
	// ConfigMap, Corefile refused, OnChange failed, output not written).
	// The same error is reported once until something changes.
	OnError func(error)
	// PollInterval is the fallback poll period; 0 means the smallest
	// `reload` interval of the configuration.
	PollInterval time.Duration
	// DisableNotify turns file notifications off (polling only).
	DisableNotify bool
}

// Watcher renders the Corefile template and keeps the configuration up to
// date with the template and the kube-dns ConfigMap.
type Watcher struct {
	opts Options
	// direct is true when there is no template: Output is the Corefile.
	direct bool

	mu      sync.Mutex
	cfg     *corefile.Config // in force
	text    string           // text of cfg
	seen    string           // last rendered text, applied or refused
	lastErr string           // last reported error
}

// NewWatcher renders the template and parses the result: the startup
// configuration. Any error is fatal for the caller, as a bad Corefile is
// for node-cache. The rendered Corefile is written to Options.Output; a
// write failure only goes to OnError (the file is informational).
func NewWatcher(opts Options) (*Watcher, error) {
	w := &Watcher{opts: opts}
	if _, err := os.Stat(opts.Template); errors.Is(err, fs.ErrNotExist) && opts.Output != "" {
		if _, err := os.Stat(opts.Output); err == nil {
			w.direct = true
		}
	}
	text, err := w.render()
	if err != nil {
		return nil, err
	}
	cfg, err := corefile.Parse(text, opts.Parse)
	if err != nil {
		return nil, fmt.Errorf("rendered Corefile: %w", err)
	}
	w.cfg, w.text, w.seen = cfg, text, text
	if err := w.write(text); err != nil {
		w.report(err)
	}
	return w, nil
}

// Direct reports whether there is no template and Output is served as it
// is (no rendering, no writing).
func (w *Watcher) Direct() bool {
	return w.direct
}

// Config returns the configuration in force and its text.
func (w *Watcher) Config() (*corefile.Config, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg, w.text
}

// Check renders and parses the current files now. When the text changed
// and parses, OnChange is called and, if it accepts, the new configuration
// is in force (changed is true). A text that was already refused is not
// tried again until it changes.
func (w *Watcher) Check() (changed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	text, err := w.render()
	if err != nil {
		return false, err
	}
	if strings.Contains(text, "import") {
		// Imported files may have changed under the same text: parse
		// again unless the text in force and its imports are unchanged.
		if text == w.text && !corefile.ImportsChanged(w.cfg) {
			return false, nil
		}
	} else if text == w.text || text == w.seen {
		return false, nil
	}
	w.seen = text
	cfg, err := corefile.Parse(text, w.opts.Parse)
	if err != nil {
		return false, fmt.Errorf("new Corefile refused, keeping the old one: %w", err)
	}
	if w.opts.OnChange != nil {
		if err := w.opts.OnChange(cfg, text); err != nil {
			return false, fmt.Errorf("new Corefile not applied, keeping the old one: %w", err)
		}
	}
	w.cfg, w.text = cfg, text
	return true, w.write(text)
}

// Run watches the template's and the ConfigMap's directories (file events
// plus a poll) and calls Check on every change, until ctx is done. As in
// CoreDNS, changes are applied only when the configuration has the reload
// plugin (or PollInterval is set); otherwise Run just waits.
func (w *Watcher) Run(ctx context.Context) error {
	interval := w.pollInterval()
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	var fw *fsnotify.Watcher
	var events <-chan fsnotify.Event
	var errs <-chan error
	if !w.opts.DisableNotify {
		var err error
		if fw, err = fsnotify.NewWatcher(); err != nil {
			w.report(fmt.Errorf("file notifications unavailable, polling every %s: %w", interval, err))
		} else {
			defer fw.Close()
			events, errs = fw.Events, fw.Errors
		}
	}
	w.addWatches(fw)
	// Catch what changed between NewWatcher and the watches.
	w.checkAndReport()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if w.relevant(ev) {
				timer.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.report(fmt.Errorf("file notifications: %w", err))
		case <-timer.C:
			w.checkAndReport()
		case <-tick.C:
			w.addWatches(fw) // the ConfigMap directory may have appeared
			w.checkAndReport()
		}
	}
}

func (w *Watcher) pollInterval() time.Duration {
	if w.opts.PollInterval > 0 {
		return w.opts.PollInterval
	}
	cfg, _ := w.Config()
	var d time.Duration
	for _, s := range cfg.Servers {
		if s.Reload > 0 && (d == 0 || s.Reload < d) {
			d = s.Reload
		}
	}
	return d
}

// dirs are the directories whose changes matter.
func (w *Watcher) dirs() []string {
	if w.direct {
		return []string{filepath.Dir(w.opts.Output)}
	}
	d := []string{filepath.Dir(w.opts.Template)}
	if w.opts.KubeDNSConfigDir != "" {
		d = append(d, filepath.Clean(w.opts.KubeDNSConfigDir))
	}
	return d
}

// addWatches (re)adds the directory watches; fsnotify ignores duplicates.
func (w *Watcher) addWatches(fw *fsnotify.Watcher) {
	if fw == nil {
		return
	}
	for _, d := range w.dirs() {
		if err := fw.Add(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.report(fmt.Errorf("watching %s: %w", d, err))
		}
	}
}

// relevant drops the events of writing Output (and its temporary file)
// when Output is in a watched directory.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	if w.opts.Output == "" || w.direct {
		return true
	}
	outDir, outBase := filepath.Split(filepath.Clean(w.opts.Output))
	dir, base := filepath.Split(filepath.Clean(ev.Name))
	if dir != outDir {
		return true
	}
	return base != outBase && !strings.HasPrefix(base, "."+outBase+tmpSuffix)
}

func (w *Watcher) checkAndReport() {
	changed, err := w.Check()
	if err != nil {
		w.report(err)
		return
	}
	if changed {
		w.mu.Lock()
		w.lastErr = ""
		w.mu.Unlock()
	}
}

// report hands err to OnError, once until a different error occurs.
func (w *Watcher) report(err error) {
	w.mu.Lock()
	dup := err.Error() == w.lastErr
	w.lastErr = err.Error()
	w.mu.Unlock()
	if !dup && w.opts.OnError != nil {
		w.opts.OnError(err)
	}
}

// render reads the template and the kube-dns ConfigMap and renders them.
func (w *Watcher) render() (string, error) {
	if w.direct {
		b, err := os.ReadFile(w.opts.Output)
		if err != nil {
			return "", fmt.Errorf("reading Corefile: %w", err)
		}
		return string(b), nil
	}
	tmpl, err := os.ReadFile(w.opts.Template)
	if err != nil {
		return "", fmt.Errorf("reading Corefile template: %w", err)
	}
	kd, err := LoadKubeDNSConfig(w.opts.KubeDNSConfigDir)
	if err != nil {
		return "", err
	}
	p := w.opts.Params
	p.KubeDNS = kd
	text, err := Render(string(tmpl), p)
	if err != nil {
		return "", fmt.Errorf("rendering %s: %w", w.opts.Template, err)
	}
	return text, nil
}

// write replaces Output atomically (temporary file and rename).
func (w *Watcher) write(text string) error {
	if w.opts.Output == "" || w.direct {
		return nil
	}
	dir, base := filepath.Split(w.opts.Output)
	f, err := os.CreateTemp(dir, "."+base+tmpSuffix+"*")
	if err != nil {
		return fmt.Errorf("writing rendered Corefile: %w", err)
	}
	_, werr := f.WriteString(text)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o644)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing rendered Corefile %s: %w", w.opts.Output, err)
	}
	if err := os.Rename(f.Name(), w.opts.Output); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing rendered Corefile: %w", err)
	}
	return nil
}
