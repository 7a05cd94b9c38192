package gotemplate

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/miekg/dns"
)

// ref is the data as text/template sees it: the same fields and CoreDNS's
// Meta method.
type ref struct{ *Data }

func (ref) Meta(string) string { return "" }

func testData() *Data {
	req := new(dns.Msg)
	req.SetQuestion("ip-10-1.example.org.", dns.TypeA)
	req.Id = 4242
	q := req.Question[0]
	return &Data{Zone: "example.org.", Name: "ip-10-1.example.org.", Regex: `^ip-(?P<a>\d+)-(?P<b>\d+)\.`,
		Match: []string{"ip-10-1.", "10", "1"}, Group: map[string]string{"0": "ip-10-1.", "1": "10", "2": "1", "a": "10", "b": "1"},
		Class: "IN", Type: "A", Message: req, Question: &q, Remote: "10.0.0.9"}
}

// reference runs text with text/template, as CoreDNS does.
func reference(text string, d *Data) (string, error) {
	t, err := template.New("answer").Funcs(template.FuncMap{"parseInt": strconv.ParseUint}).Parse(text)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = t.Execute(&b, ref{d})
	return b.String(), err
}

// run runs text with the evaluator.
func run(text string, d *Data) (string, error) {
	p, err := Compile("answer", text)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = p.Execute(&b, d)
	return b.String(), err
}

// TestAgainstTextTemplate compares the evaluator with text/template on the
// templates of CoreDNS's README and tests and more.
func TestAgainstTextTemplate(t *testing.T) {
	for _, text := range []string{
		`{{ .Name }} 60 IN A 10.0.0.1`,
		`{{ .Name }} 60 {{ .Class }} A 10.{{ index .Match 1 }}.{{ index .Match 2 }}.0`,
		`{{ .Name }} 60 IN A 10.{{ .Group.a }}.{{ .Group.b }}.{{ .Group.missing }}`,
		`{{ .Zone }} 60 IN SOA ns.{{ .Zone }} hostmaster.{{ .Zone }} (1 60 60 60 60)`,
		`{{ .Name }} 60 IN TXT "{{ .Remote }} {{ .Type }} {{ .Regex }}"`,
		`{{ .Name }} 60 IN TXT "{{ .Message.Id }} {{ .Question.Name }} {{ .Question.Qtype }} {{ .Message.RecursionDesired }}"`,
		`{{ .Name }} 60 IN A {{ (parseInt (index .Match 1) 10 8) }}.0.0.1`,
		`{{ parseInt "300" 10 8 }}`,
		`{{ printf "%s-%03d" .Type 7 }} {{ print .Class 1 2 }} {{ println "x" }}`,
		`{{ if eq .Type "A" }}a{{ else if eq .Type "AAAA" }}aaaa{{ else }}other{{ end }}`,
		`{{ if and (eq .Class "IN") (ne .Type "MX") }}yes{{ end }} {{ or "" "b" }} {{ and 1 0 }} {{ not .Name }}`,
		`{{ range $i, $m := .Match }}{{ $i }}={{ $m }};{{ end }}`,
		`{{ range $k, $v := .Group }}{{ $k }}={{ $v }};{{ end }}{{ range .Match }}[{{ . }}]{{ end }}`,
		`{{ range .Match }}{{ if eq . "10" }}{{ break }}{{ end }}{{ . }}{{ end }}`,
		`{{ range 3 }}{{ . }}{{ end }}{{ range $i := 2 }}{{ $i }}{{ end }}`,
		`{{ with .Group.a }}{{ . }}{{ else }}none{{ end }} {{ with .Group.zz }}{{ . }}{{ else }}none{{ end }}`,
		`{{ $x := .Name }}{{ $x }} {{ $x = "y" }}{{ $x }} {{ $.Zone }}`,
		`{{ len .Match }} {{ len .Name }} {{ len .Group }} {{ index .Group "a" }}{{ index .Group "nope" }}`,
		`{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1 2 }} {{ eq 1 2 3 1 }} {{ eq .Question.Qtype 1 }}`,
		`{{ .Message.Question }} {{ index .Message.Question 0 }}`,
		`{{ .Meta "kubernetes/client-namespace" }}x`,
		`{{- .Name -}} {{/* comment */}}  60 IN A 1.2.3.4`,
		`{{ .Question }}`,
		`{{ .Match }} {{ .Group }}`,
		`{{ html "<a href='x'>&\"</a>\x00" }} {{ html .Name 1 }} {{ js "it's <b>\\ & = \x01 \u00e9 \u2028" }} {{ urlquery "a b&c=d/é" .Type }}`,
		`{{ slice .Name 3 }} {{ slice .Name 1 4 }} {{ slice .Match 1 }} {{ slice .Match 1 2 3 }} {{ index (slice .Match 1) 0 }}`,
		// Errors at run time in both.
		`{{ slice .Name 5 2 }}`,
		`{{ slice .Name 1 2 3 }}`,
		`{{ slice .Match 9 }}`,
		`{{ index .Match 5 }}`,
		`{{ parseInt "x" 10 8 }}`,
		`{{ parseInt .Name }}`,
		`{{ lt .Name 1 }}`,
		`{{ .Name.Foo }}`,
	} {
		want, werr := reference(text, testData())
		got, gerr := run(text, testData())
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%s: error %v, text/template's %v", text, gerr, werr)
			continue
		}
		if werr == nil && got != want {
			t.Errorf("%s:\ngot  %q\nwant %q", text, got, want)
		}
	}
}

// TestRefused checks what the evaluator refuses when it is compiled.
func TestRefused(t *testing.T) {
	for _, text := range []string{
		`{{ define "x" }}a{{ end }}{{ template "x" }}`,
		`{{ template "x" }}`,
		`{{ call .Name }}`,
		`{{ .Nope }}`,
		`{{ $.Message.Nope }}`,
		`{{ .Name`,
	} {
		if _, err := Compile("answer", text); err == nil {
			t.Errorf("%s: compiled", text)
		}
	}
}

// pointer matches a printed pointer (the data printed as a whole).
var pointer = regexp.MustCompile(`0x[0-9a-f]{6,}`)

// FuzzAgainstTextTemplate checks that what the evaluator compiles gives
// text/template's output, or an error where text/template has one.
func FuzzAgainstTextTemplate(f *testing.F) {
	f.Add(`{{ .Name }} {{ index .Match 1 }} {{ if eq .Type "A" }}{{ .Group.a }}{{ end }}`)
	f.Add(`{{ range $i, $e := .Match }}{{ printf "%d:%s" $i $e }}{{ end }}`)
	f.Add(`{{ with $x := .Group.b }}{{ $x }}{{ len $x }}{{ end }}{{ parseInt "12" 10 8 }}`)
	f.Add(`{{ html .Name "<&>" }}{{ js "a'b=c" }}{{ urlquery .Match }}{{ slice .Name 1 3 }}`)
	f.Fuzz(func(t *testing.T, text string) {
		if strings.Contains(text, "range") && strings.ContainsAny(text, "0123456789") && len(text) > 200 {
			return // keep ranges over integers short
		}
		got, gerr := run(text, testData())
		if gerr != nil {
			return
		}
		want, werr := reference(text, testData())
		if werr != nil {
			// text/template refuses what the evaluator ran: only
			// acceptable for its parse-time checks we do not have.
			t.Fatalf("%q: evaluator gave %q, text/template: %v", text, got, werr)
		}
		if pointer.MatchString(want) {
			return // the data itself printed: pointers, in CoreDNS too
		}
		if got != want {
			t.Fatalf("%q:\ngot  %q\nwant %q", text, got, want)
		}
	})
}
