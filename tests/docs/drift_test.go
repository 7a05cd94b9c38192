// Package docs checks that README.md, docs/ and the manifests cannot drift
// from the code: every flag of both programs is documented, every flag the
// README names exists, and every metric the docs name or the dashboards and
// alerts query is registered by one of the programs. A failure says what is
// missing where.
package docs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	agentapp "github.com/nodelocaldns/nodelocaldns/agent/app"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	webhookapp "github.com/nodelocaldns/nodelocaldns/webhook/app"
)

// doc is one Markdown file: its path relative to the repository and text.
type doc struct{ path, text string }

// readDocs returns README.md and every Markdown file under docs/.
func readDocs(t *testing.T) []doc {
	t.Helper()
	root := testenv.RepoRoot()
	paths := []string{filepath.Join(root, "README.md")}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var docs []doc
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		docs = append(docs, doc{rel, string(b)})
	}
	return docs
}

// program is one of the two programs with its flags and the dash its docs
// write them with (node-cache's -flag for the agent, kubebuilder's --flag
// for the webhook).
type program struct {
	name, dash, reference string
	flags                 *flag.FlagSet
}

func programs(t *testing.T) []program {
	t.Helper()
	wfs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	webhookapp.NewOptions().AddFlags(wfs)
	return []program{
		{name: "agent", dash: "-", reference: "docs/agent-config.md", flags: agentapp.FlagSet()},
		{name: "webhook", dash: "--", reference: "docs/webhook.md", flags: wfs},
		{name: "webhook status", dash: "--", reference: "docs/webhook.md", flags: statusFlags(t)},
	}
}

// statusFlags returns the flags of `webhook status`, read from its -h
// output (RunStatus builds its FlagSet inside), as a FlagSet of names.
func statusFlags(t *testing.T) *flag.FlagSet {
	t.Helper()
	var help strings.Builder
	if err := webhookapp.RunStatus(context.Background(), []string{"-h"}, io.Discard, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("webhook status -h: %v, want flag.ErrHelp", err)
	}
	fs := flag.NewFlagSet("webhook status", flag.ContinueOnError)
	for _, m := range regexp.MustCompile(`(?m)^  -([\w.-]+)`).FindAllStringSubmatch(help.String(), -1) {
		fs.Bool(m[1], false, "webhook status flag")
	}
	if countFlags(fs) == 0 {
		t.Fatalf("no flags in webhook status -h:\n%s", help.String())
	}
	return fs
}

func countFlags(fs *flag.FlagSet) int {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n
}

// flagPattern matches dash+name as a whole flag: not inside a longer flag
// (-port in -dns.port, --port in --port-range) and not after another dash.
func flagPattern(dash, name string) *regexp.Regexp {
	return regexp.MustCompile(`(?:^|[^\w-])` + regexp.QuoteMeta(dash+name) + `(?:$|[^\w.-]|\.(?:\W|$))`)
}

// Every flag of both programs appears in README.md or docs/, written as the
// program's docs write flags (-name for the agent, --name for the webhook).
func TestEveryFlagIsDocumented(t *testing.T) {
	docs := readDocs(t)
	for _, p := range programs(t) {
		var missing []string
		p.flags.VisitAll(func(f *flag.Flag) {
			re := flagPattern(p.dash, f.Name)
			if !slices.ContainsFunc(docs, func(d doc) bool { return re.MatchString(d.text) }) {
				missing = append(missing, fmt.Sprintf("  %s%s  (%s)", p.dash, f.Name, f.Usage))
			}
		})
		if len(missing) > 0 {
			t.Errorf("%d %s flag(s) are documented nowhere in README.md or docs/*.md; add them to %s:\n%s",
				len(missing), p.name, p.reference, strings.Join(missing, "\n"))
		}
	}
}

// readmeFlag is a flag written on its own in backquotes: `-name`,
// `--name`, `--name=value`, `-name value`, or a family `--prefix-*`.
var readmeFlag = regexp.MustCompile("`(--?)([A-Za-z][\\w.-]*)(\\*?)(?:[= ][^`]*)?`")

// Every flag the README names exists: -name in the agent, --name in the
// webhook (a family --prefix-* in that program's flags).
func TestREADMEFlagsExist(t *testing.T) {
	var readme doc
	for _, d := range readDocs(t) {
		if d.path == "README.md" {
			readme = d
		}
	}
	byDash := map[string]program{}
	for _, p := range programs(t)[:2] { // README names the programs' flags
		byDash[p.dash] = p
	}
	var unknown []string
	for i, line := range strings.Split(readme.text, "\n") {
		for _, m := range readmeFlag.FindAllStringSubmatch(line, -1) {
			dash, name, family := m[1], m[2], m[3] == "*"
			p := byDash[dash]
			found := false
			p.flags.VisitAll(func(f *flag.Flag) {
				found = found || f.Name == name || family && strings.HasPrefix(f.Name, name)
			})
			if !found {
				unknown = append(unknown, fmt.Sprintf("  README.md:%d: %s is not a flag of the %s", i+1, strings.Trim(m[0], "`"), p.name))
			}
		}
	}
	if len(unknown) > 0 {
		t.Errorf("the README names flags the programs do not have (the agent's flags are written -name, the webhook's --name):\n%s",
			strings.Join(unknown, "\n"))
	}
}

// metricName matches a metric name of the families the programs export
// (a trailing _* names a family of metrics by prefix).
var metricName = regexp.MustCompile(`\b((?:coredns|nodelocaldns|controller_runtime|certwatcher|workqueue|rest_client|leader_election|go|process|promhttp)_[a-z0-9_]*[a-z0-9](?:_\*)?)`)

// Every metric the docs name is registered by one of the programs: defined
// in the agent's or the webhook's code (agent/, webhook/, certs/, pkg/), or
// registered on controller-runtime's registry, which the webhook serves
// (controller-runtime's own series, Go and process collectors). Names in a
// sentence or table row that says they are "not exported" are left out.
func TestDocumentedMetricsAreRegistered(t *testing.T) {
	defined := definedMetrics(t)
	var unknown []string
	for _, d := range readDocs(t) {
		for _, s := range sentences(d.text) {
			if strings.Contains(s.text, "not exported") {
				continue
			}
			for _, loc := range metricName.FindAllStringIndex(s.text, -1) {
				name := s.text[loc[0]:loc[1]]
				if !registered(name, defined) {
					at := s.line + strings.Count(s.text[:loc[0]], "\n")
					unknown = append(unknown, fmt.Sprintf("  %s:%d: %s", d.path, at, name))
				}
			}
		}
	}
	if len(unknown) > 0 {
		t.Errorf("the docs name metrics no program registers (fix the name, or say in the same sentence or table row that it is not exported):\n%s",
			strings.Join(unknown, "\n"))
	}
}

// sentence is a piece of text ending at ". " or a blank line, or one row of
// a Markdown table, with the line it starts on.
type sentence struct {
	text string
	line int
}

var sentenceEnd = regexp.MustCompile(`\.\s|\n\s*\n`)

func sentences(text string) []sentence {
	var out []sentence
	var para strings.Builder
	paraLine := 1
	flush := func() {
		rest, line := para.String(), paraLine
		for rest != "" {
			end := len(rest)
			if loc := sentenceEnd.FindStringIndex(rest); loc != nil {
				end = loc[1]
			}
			out = append(out, sentence{rest[:end], line})
			line += strings.Count(rest[:end], "\n")
			rest = rest[end:]
		}
		para.Reset()
	}
	for i, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "|"):
			flush()
			out = append(out, sentence{l, i + 1})
		case strings.TrimSpace(l) == "":
			flush()
		default:
			if para.Len() == 0 {
				paraLine = i + 1
			}
			para.WriteString(l + "\n")
		}
	}
	flush()
	return out
}

// registered reports whether name (or, for prefix_*, some metric with that
// prefix) is defined in our code or registered on controller-runtime's
// registry.
func registered(name string, defined map[string]bool) bool {
	if prefix, ok := strings.CutSuffix(name, "*"); ok {
		for n := range defined {
			if strings.HasPrefix(n, prefix) {
				return true
			}
		}
		return false
	}
	return defined[name] || onControllerRuntimeRegistry(name)
}

// onControllerRuntimeRegistry reports whether a metric called name is
// registered on controller-runtime's registry: registering a probe of that
// name fails when one is (the registry refuses a second descriptor with the
// same name and other help), whether or not it has series yet.
func onControllerRuntimeRegistry(name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "docs-drift probe"})
	if err := ctrlmetrics.Registry.Register(probe); err != nil {
		return true
	}
	ctrlmetrics.Registry.Unregister(probe)
	return false
}

// definedMetrics returns the metric names defined in the programs' code:
// the Namespace/Subsystem/Name fields of prometheus.*Opts literals and the
// names given to prometheus.NewDesc.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	root := testenv.RepoRoot()
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range []string{"agent", "webhook", "certs", "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if name, ok := metricOf(n); ok {
					if name == "?" {
						t.Errorf("%s: a metric name that is not a string literal; the docs-drift scan reads literals", fset.Position(n.Pos()))
					}
					names[name] = true
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric definitions in the code (%v): the scan is broken", len(names), names)
	}
	return names
}

// metricOf returns the metric name an Opts literal or NewDesc call defines.
func metricOf(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.CompositeLit:
		sel, ok := n.Type.(*ast.SelectorExpr)
		if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
			return "", false
		}
		parts := map[string]string{}
		for _, e := range n.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			if k, ok := kv.Key.(*ast.Ident); ok {
				parts[k.Name] = stringLit(kv.Value)
			}
		}
		if _, named := parts["Name"]; !named {
			return "", false
		}
		if parts["Name"] == "" {
			// A name the scan cannot read: reported, never skipped.
			return "?", true
		}
		return prometheus.BuildFQName(parts["Namespace"], parts["Subsystem"], parts["Name"]), true
	case *ast.CallExpr:
		// prometheus.NewDesc("name", ...), and constructors of collectors
		// that take the name first (newHistVec("name", ...)).
		var fn string
		switch f := n.Fun.(type) {
		case *ast.SelectorExpr:
			fn = f.Sel.Name
		case *ast.Ident:
			fn = f.Name
		}
		if !collectorFunc.MatchString(fn) || len(n.Args) == 0 {
			return "", false
		}
		name := stringLit(n.Args[0])
		return name, metricName.MatchString(name)
	}
	return "", false
}

// collectorFunc matches the functions whose first argument is a metric name.
var collectorFunc = regexp.MustCompile(`(?i)desc|vec$|hist|counter|gauge|summary`)

func stringLit(e ast.Expr) string {
	if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
		if s, err := strconv.Unquote(lit.Value); err == nil {
			return s
		}
	}
	return ""
}

// Every metric the manifests' dashboards, alerts and Helm chart query is
// registered too: an alert on a name nobody exports never fires. Histogram
// series (_bucket, _count, _sum) count as their histogram.
func TestManifestMetricsAreRegistered(t *testing.T) {
	defined := definedMetrics(t)
	root := testenv.RepoRoot()
	var unknown []string
	err := filepath.WalkDir(filepath.Join(root, "manifests"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".json") || strings.HasSuffix(p, ".tpl")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for i, line := range strings.Split(string(b), "\n") {
			for _, name := range metricName.FindAllString(line, -1) {
				series := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if h, ok := strings.CutSuffix(name, suffix); ok && defined[h] {
						series = h
					}
				}
				if !registered(series, defined) {
					unknown = append(unknown, fmt.Sprintf("  %s:%d: %s", rel, i+1, name))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) > 0 {
		t.Errorf("the manifests query metrics no program registers:\n%s", strings.Join(unknown, "\n"))
	}
}
