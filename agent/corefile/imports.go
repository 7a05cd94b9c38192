package corefile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coredns/caddy/caddyfile"
)

// maxImportDepth bounds nested file imports (a file importing itself
// stops here with a clear error rather than in the parser's expansion
// cap).
const maxImportDepth = 10

// importWalk checks the files a Corefile imports before the Caddyfile
// parser reads them: each must be a regular file, all of them together at
// most MaxSize bytes, nested at most maxImportDepth deep. It records a
// digest of each.
type importWalk struct {
	files    map[string]string
	total    int
	snippets map[string]bool
}

// checkImports walks the imports of text (the Corefile named filename) and
// returns the imported files with the digests of their contents.
func checkImports(text, filename string) (map[string]string, error) {
	w := &importWalk{files: map[string]string{}, total: len(text), snippets: map[string]bool{}}
	if err := w.walk(text, filename, 0); err != nil {
		return nil, err
	}
	if len(w.files) == 0 {
		return nil, nil
	}
	return w.files, nil
}

func (w *importWalk) walk(text, filename string, depth int) error {
	w.collectSnippets(text, filename)
	d := caddyfile.NewDispenser(filename, strings.NewReader(text))
	for d.Next() {
		if d.Val() != "import" || !d.NextArg() {
			continue // the parser reports a bare import
		}
		pattern, line := d.Val(), d.Line()
		if w.snippets[pattern] {
			continue
		}
		errf := func(format string, args ...any) error {
			return &Error{File: filename, Line: line, Msg: "import " + pattern + ": " + fmt.Sprintf(format, args...)}
		}
		if depth >= maxImportDepth {
			return errf("imports nested more than %d deep (does a file import itself?)", maxImportDepth)
		}
		glob := pattern
		if !filepath.IsAbs(glob) {
			abs, err := filepath.Abs(filename)
			if err != nil {
				return errf("%v", err)
			}
			glob = filepath.Join(filepath.Dir(abs), pattern)
		}
		if strings.Count(glob, "*") > 1 || strings.Count(glob, "?") > 1 || strings.Contains(glob, "[") && strings.Contains(glob, "]") {
			continue // the parser refuses patterns with several wildcards
		}
		matches, err := filepath.Glob(glob)
		if err != nil {
			continue // the parser reports a bad pattern
		}
		for _, m := range matches {
			if err := w.file(m, errf, depth); err != nil {
				return err
			}
		}
	}
	return nil
}

// file checks and reads one imported file, then walks its imports.
func (w *importWalk) file(path string, errf func(string, ...any) error, depth int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return errf("%v", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return errf("%v", err)
	}
	if !fi.Mode().IsRegular() {
		return errf("%s is not a regular file", abs)
	}
	f, err := os.Open(abs)
	if err != nil {
		return errf("%v", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(MaxSize-w.total)+1))
	f.Close()
	if err != nil {
		return errf("%v", err)
	}
	w.total += len(data)
	if w.total > MaxSize {
		return errf("the Corefile and its imports are larger than %d bytes", MaxSize)
	}
	sum := sha256.Sum256(data)
	w.files[abs] = hex.EncodeToString(sum[:])
	return w.walk(string(data), abs, depth+1)
}

// collectSnippets notes the snippet names ("(name) {") defined at the top
// level of text.
func (w *importWalk) collectSnippets(text, filename string) {
	d := caddyfile.NewDispenser(filename, strings.NewReader(text))
	depth := 0
	for d.Next() {
		switch v := d.Val(); {
		case v == "{":
			depth++
		case v == "}":
			depth = max(depth-1, 0)
		case depth == 0 && len(v) > 2 && strings.HasPrefix(v, "(") && strings.HasSuffix(v, ")"):
			w.snippets[v[1:len(v)-1]] = true
		}
	}
}

// ImportsChanged reports whether a file cfg imported changed (or
// vanished) since it was parsed.
func ImportsChanged(cfg *Config) bool {
	for path, digest := range cfg.Imports {
		data, err := os.ReadFile(path)
		if err != nil {
			return true
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != digest {
			return true
		}
	}
	return false
}

// blockLine is the first line of a block's directives, for a block whose
// key line is unknown (it came from an imported file).
func blockLine(b caddyfile.ServerBlock) int {
	line := 0
	for _, tokens := range b.Tokens {
		if l := firstLine(tokens); l > 0 && (line == 0 || l < line) {
			line = l
		}
	}
	return line
}
