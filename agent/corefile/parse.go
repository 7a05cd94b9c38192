package corefile

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/coredns/caddy/caddyfile"
)

// MaxSize bounds the Corefile text Parse accepts.
const MaxSize = 1 << 20

// maxToken bounds one token (a path is at most 4096 bytes). It also keeps
// the caddyfile parser's {$ENV} substitution, quadratic in a token's
// length, cheap.
const maxToken = 4096

// ParseOptions are the inputs of Parse besides the text.
type ParseOptions struct {
	// Filename names the Corefile in error messages (default "Corefile").
	Filename string
	// DefaultPort is the port of server blocks without ":port" (the
	// -dns.port flag); 0 means 53.
	DefaultPort int
	// ReadFile reads the /etc/resolv.conf-style files named as forward
	// targets. nil means os.ReadFile; tests pass a fake so that the host's
	// resolv.conf is never used.
	ReadFile func(path string) ([]byte, error)
	// InterfaceAddrs returns the addresses of a network interface named
	// in bind (found false when there is none). nil means the host's
	// interfaces; tests pass a fake.
	InterfaceAddrs func(name string) (addrs []netip.Addr, found bool, err error)
}

// Error is a Corefile error with its position.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// plugins maps every plugin this dialect supports to its parser.
var plugins = map[string]func(p *blockParser, d *caddyfile.Dispenser) error{
	"errors":     parseErrorsPlugin,
	"log":        parseLogPlugin,
	"cache":      parseCache,
	"forward":    parseForward,
	"bind":       parseBindPlugin,
	"health":     parseHealth,
	"ready":      parseReady,
	"prometheus": parsePrometheus,
	"reload":     parseReload,
	"loop":       parseLoop,
	"bufsize":    parseBufsize,
	"timeouts":   parseTimeouts,
	"debug":      parseDebug,
	"pprof":      parsePprof,
	"trace":      parseTrace,

	"hosts":       parseHosts,
	"rewrite":     parseRewrite,
	"template":    parseTemplate,
	"dns64":       parseDNS64,
	"loadbalance": parseLoadBalance,
	"whoami":      parseWhoami,
}

// repeatable lists the plugins that may appear more than once per block.
var repeatable = map[string]bool{"bind": true, "forward": true, "log": true, "rewrite": true, "template": true}

// Parse parses a Corefile with the Caddyfile parser CoreDNS uses and checks
// it against the supported dialect. Unknown plugins and options are errors
// naming them and their line; defaults are CoreDNS's.
func Parse(text string, opts ParseOptions) (*Config, error) {
	if opts.Filename == "" {
		opts.Filename = "Corefile"
	}
	if opts.DefaultPort == 0 {
		opts.DefaultPort = 53
	}
	if opts.DefaultPort < 1 || opts.DefaultPort > 65535 {
		return nil, fmt.Errorf("default port %d out of range", opts.DefaultPort)
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	if len(text) > MaxSize {
		return nil, &Error{File: opts.Filename, Msg: fmt.Sprintf("Corefile is larger than %d bytes", MaxSize)}
	}
	keyLines, err := scan(text, opts.Filename)
	if err != nil {
		return nil, err
	}
	imports, err := checkImports(text, opts.Filename)
	if err != nil {
		return nil, err
	}
	blocks, err := caddyfile.Parse(opts.Filename, strings.NewReader(text), nil)
	if err != nil {
		return nil, fmt.Errorf("%s", cleanCaddyError(err))
	}
	if len(blocks) == 0 {
		return nil, &Error{File: opts.Filename, Msg: "no server blocks"}
	}
	cfg := &Config{}
	seen := map[string]int{} // "zone:port" -> line
	for i, b := range blocks {
		line := blockLine(b)
		if i < len(keyLines) {
			line = keyLines[i]
		}
		s, err := parseBlock(b, line, &opts)
		if err != nil {
			return nil, err
		}
		for _, z := range s.Zones {
			key := fmt.Sprintf("%s:%d", z, s.Port)
			if prev, dup := seen[key]; dup {
				return nil, &Error{File: opts.Filename, Line: line,
					Msg: fmt.Sprintf("zone %s is served twice (also by the block at line %d)", key, prev)}
			}
			seen[key] = line
		}
		if err := sameTimeouts(cfg.Servers, s, opts.Filename); err != nil {
			return nil, err
		}
		cfg.Servers = append(cfg.Servers, *s)
	}
	cfg.Imports = imports
	return cfg, nil
}

// sameTimeouts refuses a timeouts plugin that differs from an earlier
// block's: the agent applies one set of TCP timeouts to all its listeners.
func sameTimeouts(prev []Server, s *Server, filename string) error {
	if s.Timeouts == nil {
		return nil
	}
	for _, o := range prev {
		if o.Timeouts != nil && *o.Timeouts != *s.Timeouts {
			return &Error{File: filename, Line: s.Line, Msg: fmt.Sprintf(
				"plugin \"timeouts\": differs from the block at line %d; the agent applies one set of timeouts to all its listeners", o.Line)}
		}
	}
	return nil
}

// scan lexes the text once to refuse `import` (it would read other files,
// outside the watched template) and unrendered __PILLAR__ variables, and to
// find the line where each server
// block starts, which caddyfile.ServerBlock does not keep.
func scan(text, filename string) ([]int, error) {
	d := caddyfile.NewDispenser(filename, strings.NewReader(text))
	var lines []int
	depth := 0
	start := true
	snippet := false
	topImport := false
	for d.Next() {
		v := d.Val()
		if len(v) > maxToken {
			return nil, &Error{File: filename, Line: d.Line(), Msg: fmt.Sprintf("token of %d bytes is longer than %d", len(v), maxToken)}
		}
		if v == "import" && depth == 0 {
			// A top-level import may bring server blocks: the lines of
			// the keys are not known then (see blockLine).
			topImport = true
		}
		if strings.Contains(v, "__PILLAR__") {
			return nil, &Error{File: filename, Line: d.Line(), Msg: fmt.Sprintf("template variable in %q was not rendered", v)}
		}
		switch {
		case v == "{":
			depth++
		case v == "}":
			if depth > 0 {
				depth--
			}
			if depth == 0 {
				start = true
			}
		case depth == 0 && start:
			start = false
			snippet = strings.HasPrefix(v, "(") && strings.HasSuffix(v, ")")
			if !snippet {
				lines = append(lines, d.Line())
			}
		}
	}
	if topImport {
		return nil, nil
	}
	return lines, nil
}

// cleanCaddyError turns "Corefile:3 - Error during parsing: msg" into
// "Corefile:3: msg".
func cleanCaddyError(err error) string {
	s := err.Error()
	for _, sep := range []string{" - Error during parsing: ", " - Syntax error: "} {
		s = strings.Replace(s, sep, ": ", 1)
	}
	return s
}

// blockParser holds the state of one server block being parsed.
type blockParser struct {
	opts   *ParseOptions
	server *Server
	bound  map[string]bool // the bind addresses so far
}

func (p *blockParser) errf(d *caddyfile.Dispenser, format string, args ...any) error {
	// An imported token names its own file.
	return &Error{File: cmp.Or(d.File(), p.opts.Filename), Line: d.Line(), Msg: fmt.Sprintf(format, args...)}
}

func parseBlock(b caddyfile.ServerBlock, line int, opts *ParseOptions) (*Server, error) {
	s := &Server{Line: line}
	zones, port, err := parseKeys(b.Keys, opts.DefaultPort)
	if err != nil {
		return nil, &Error{File: opts.Filename, Line: line, Msg: err.Error()}
	}
	s.Zones, s.Port = zones, port
	p := &blockParser{opts: opts, server: s}

	// Visit the directives in file order so the first error is reported.
	names := make([]string, 0, len(b.Tokens))
	for name := range b.Tokens {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return firstLine(b.Tokens[names[i]]) < firstLine(b.Tokens[names[j]])
	})
	s.Plugins = names
	for _, name := range names {
		tokens := b.Tokens[name]
		parse, ok := plugins[name]
		if !ok {
			return nil, &Error{File: cmp.Or(tokens[0].File, opts.Filename), Line: firstLine(tokens), Msg: fmt.Sprintf("unknown plugin %q", name)}
		}
		d := caddyfile.NewDispenserTokens(opts.Filename, tokens)
		for n := 0; d.Next(); n++ {
			if d.Val() != name {
				return nil, p.errf(&d, "unexpected %q after plugin %q", d.Val(), name)
			}
			if n > 0 && !repeatable[name] {
				return nil, p.errf(&d, "plugin %q can only be used once per server block", name)
			}
			if err := parse(p, &d); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func firstLine(tokens []caddyfile.Token) int {
	if len(tokens) == 0 {
		return 0
	}
	return tokens[0].Line
}

// args returns the remaining arguments of the current line and refuses a
// block after them: for plugins and options that take no block.
func (p *blockParser) args(d *caddyfile.Dispenser, what string) ([]string, error) {
	args := d.RemainingArgs()
	if d.NextArg() { // RemainingArgs stops at '{'
		return nil, p.errf(d, "%s takes no block", what)
	}
	return args, nil
}

// noBlock fails when a plugin without options is given a block.
func (p *blockParser) noBlock(d *caddyfile.Dispenser, plugin string) error {
	if d.NextBlock() {
		return p.errf(d, "unknown option %q of plugin %q", d.Val(), plugin)
	}
	return nil
}

// errWrongArgs is the message for a wrong argument count.
func (p *blockParser) wrongArgs(d *caddyfile.Dispenser, what string, args []string) error {
	return p.errf(d, "%s: wrong number of arguments (%d: %q)", what, len(args), args)
}
