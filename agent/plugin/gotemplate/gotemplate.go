// Package gotemplate runs the record templates of the template plugin:
// Go templates (text/template's syntax, parsed by text/template/parse)
// evaluated over the plugin's data, whose types are known.
//
// text/template itself would do, but its reflection on methods by name
// keeps every exported method in the binary: the agent grew by 2.4 MB of
// code and 1.3 MB of resident memory with it. Templates that use what this
// evaluator does not have (template definitions and calls, the function
// call, fields the data does not have) are
// refused when the Corefile is parsed, not at query time.
package gotemplate

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/template/parse"
	"unicode"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// Data is what a record template sees (CoreDNS's names).
type Data struct {
	Zone     string
	Name     string
	Regex    string
	Match    []string
	Group    map[string]string
	Class    string
	Type     string
	Message  *dns.Msg
	Question *dns.Question
	Remote   string
}

// Funcs are the functions a template may call: text/template's builtins
// but call, and CoreDNS's parseInt.
var Funcs = map[string]any{
	"and": true, "or": true, "not": true, "len": true, "index": true, "slice": true,
	"print": true, "printf": true, "println": true, "html": true, "js": true, "urlquery": true,
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"parseInt": true,
}

// fields are the field names the data offers: the template data's, a
// question's and a message's (with its header).
var fields = map[string]bool{
	"Zone": true, "Name": true, "Regex": true, "Match": true, "Group": true, "Class": true, "Type": true,
	"Message": true, "Question": true, "Remote": true, "Meta": true,
	"Qtype": true, "Qclass": true,
	"Id": true, "Response": true, "Opcode": true, "Authoritative": true, "Truncated": true, "RecursionDesired": true,
	"RecursionAvailable": true, "Zero": true, "AuthenticatedData": true, "CheckingDisabled": true, "Rcode": true,
	"Answer": true, "Ns": true, "Extra": true,
}

// Program is a compiled record template.
type Program struct {
	tree *parse.Tree
	text string
}

// Compile parses a record template and checks that the evaluator can run
// it.
func Compile(name, text string) (*Program, error) {
	trees, err := parse.Parse(name, text, "", "", Funcs)
	if err != nil {
		return nil, err
	}
	t := trees[name]
	if len(trees) != 1 || t == nil {
		return nil, errors.New("template definitions (define, block) are not supported")
	}
	if err := check(t.Root, false); err != nil {
		return nil, err
	}
	return &Program{tree: t, text: text}, nil
}

// String is the template's text, as CoreDNS's metric label has it.
func (p *Program) String() string { return p.tree.Root.String() }

// check walks the tree for what the evaluator does not support. Field
// names are checked where dot is the data (not inside with and range,
// whose dot may be anything) and after $.
func check(n parse.Node, nested bool) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := check(c, nested); err != nil {
				return err
			}
		}
	case *parse.ActionNode:
		return check(n.Pipe, nested)
	case *parse.IfNode:
		return checkBranch(&n.BranchNode, nested, nested)
	case *parse.RangeNode:
		return checkBranch(&n.BranchNode, nested, true)
	case *parse.WithNode:
		return checkBranch(&n.BranchNode, nested, true)
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				if err := check(a, nested); err != nil {
					return err
				}
			}
		}
	case *parse.FieldNode:
		if !nested {
			return checkFields(n.Ident)
		}
	case *parse.ChainNode:
		return check(n.Node, nested)
	case *parse.VariableNode:
		if n.Ident[0] == "$" {
			return checkFields(n.Ident[1:])
		}
	case *parse.TemplateNode:
		return errors.New("template calls are not supported")
	case *parse.TextNode, *parse.CommentNode, *parse.DotNode, *parse.NilNode, *parse.BoolNode, *parse.NumberNode,
		*parse.StringNode, *parse.IdentifierNode, *parse.BreakNode, *parse.ContinueNode:
	default:
		return fmt.Errorf("unsupported template construct %s", n)
	}
	return nil
}

// checkBranch checks an if, range or with: its pipeline where it is, its
// lists with the dot they get.
func checkBranch(b *parse.BranchNode, nested, body bool) error {
	if err := check(b.Pipe, nested); err != nil {
		return err
	}
	if err := check(b.List, body); err != nil {
		return err
	}
	return check(b.ElseList, nested)
}

// checkFields checks a chain of fields on the data; after Group (a map)
// any key goes.
func checkFields(names []string) error {
	for _, f := range names {
		if !fields[f] {
			return fmt.Errorf("field %q is not in the template data", f)
		}
		if f == "Group" {
			return nil
		}
	}
	return nil
}

// noValue is the value of a missing map key (printed "<no value>").
type noValue struct{}

// state is one execution.
type state struct {
	w    io.Writer
	vars []variable
	// depth bounds nested evaluation.
	depth int
}

type variable struct {
	name  string
	value any
}

var (
	errBreak    = errors.New("break")
	errContinue = errors.New("continue")
)

// maxRange bounds a range over an integer.
const maxRange = 1 << 16

// Execute runs the template on d and writes its output to w.
func (p *Program) Execute(w io.Writer, d *Data) error {
	s := &state{w: w, vars: []variable{{"$", d}}}
	err := s.walk(d, p.tree.Root)
	if errors.Is(err, errBreak) || errors.Is(err, errContinue) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("template: %s: %w", p.tree.Name, err)
	}
	return nil
}

func (s *state) walk(dot any, n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := s.walk(dot, c); err != nil {
				return err
			}
		}
	case *parse.TextNode:
		_, err := s.w.Write(n.Text)
		return err
	case *parse.CommentNode:
	case *parse.ActionNode:
		v, err := s.pipe(dot, n.Pipe)
		if err != nil {
			return err
		}
		if len(n.Pipe.Decl) == 0 {
			_, err = io.WriteString(s.w, printable(v))
		}
		return err
	case *parse.IfNode:
		return s.branch(dot, &n.BranchNode, func(v any) any { return dot })
	case *parse.WithNode:
		return s.branch(dot, &n.BranchNode, func(v any) any { return v })
	case *parse.RangeNode:
		return s.rangeNode(dot, n)
	case *parse.BreakNode:
		return errBreak
	case *parse.ContinueNode:
		return errContinue
	default:
		return fmt.Errorf("unsupported node %s", n)
	}
	return nil
}

// branch runs if and with: the list with the new dot when the pipeline is
// true, else the else list.
func (s *state) branch(dot any, b *parse.BranchNode, newDot func(any) any) error {
	mark := len(s.vars)
	defer func() { s.vars = s.vars[:mark] }()
	v, err := s.pipe(dot, b.Pipe)
	if err != nil {
		return err
	}
	if truth(v) {
		return s.walk(newDot(v), b.List)
	}
	return s.walk(dot, b.ElseList)
}

func (s *state) rangeNode(dot any, r *parse.RangeNode) error {
	mark := len(s.vars)
	defer func() { s.vars = s.vars[:mark] }()
	v, err := s.pipe(dot, r.Pipe)
	if err != nil {
		return err
	}
	s.vars = s.vars[:mark]
	var keys []any
	var vals []any
	switch v := v.(type) {
	case []string:
		for i, e := range v {
			keys, vals = append(keys, i), append(vals, e)
		}
	case map[string]string:
		ks := make([]string, 0, len(v))
		for k := range v {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			keys, vals = append(keys, k), append(vals, v[k])
		}
	case []dns.Question:
		for i, e := range v {
			keys, vals = append(keys, i), append(vals, e)
		}
	case []dns.RR:
		for i, e := range v {
			keys, vals = append(keys, i), append(vals, e)
		}
	case float64:
		return fmt.Errorf("range can't iterate over %v", v)
	case int:
		if len(r.Pipe.Decl) > 1 {
			return fmt.Errorf("can't use %d to iterate over more than one variable", v)
		}
		if v > maxRange {
			return fmt.Errorf("range over %d: more than %d iterations", v, maxRange)
		}
		for i := 0; i < v; i++ {
			keys, vals = append(keys, i), append(vals, i)
		}
	case nil, noValue:
	default:
		return fmt.Errorf("range can't iterate over %s", printable(v))
	}
	if len(vals) == 0 {
		return s.walk(dot, r.ElseList)
	}
	for i := range vals {
		s.vars = s.vars[:mark]
		switch len(r.Pipe.Decl) {
		case 1:
			s.vars = append(s.vars, variable{r.Pipe.Decl[0].Ident[0], vals[i]})
			if _, isInt := v.(int); isInt {
				s.vars[len(s.vars)-1].value = keys[i]
			}
		case 2:
			s.vars = append(s.vars, variable{r.Pipe.Decl[0].Ident[0], keys[i]}, variable{r.Pipe.Decl[1].Ident[0], vals[i]})
		}
		err := s.walk(vals[i], r.List)
		if errors.Is(err, errBreak) {
			break
		}
		if err != nil && !errors.Is(err, errContinue) {
			return err
		}
	}
	return nil
}

// pipe evaluates a pipeline, declaring or assigning its variables.
func (s *state) pipe(dot any, p *parse.PipeNode) (any, error) {
	if p == nil {
		return nil, nil
	}
	s.depth++
	defer func() { s.depth-- }()
	if s.depth > 100 {
		return nil, errors.New("expression nested too deeply")
	}
	var v any
	var final any = missing{}
	for _, c := range p.Cmds {
		var err error
		if v, err = s.command(dot, c, final); err != nil {
			return nil, err
		}
		final = v
	}
	for _, d := range p.Decl {
		if p.IsAssign {
			if err := s.setVar(d.Ident[0], v); err != nil {
				return nil, err
			}
		} else {
			s.vars = append(s.vars, variable{d.Ident[0], v})
		}
	}
	return v, nil
}

// missing marks the absence of a piped value.
type missing struct{}

func (s *state) setVar(name string, v any) error {
	for i := len(s.vars) - 1; i >= 0; i-- {
		if s.vars[i].name == name {
			s.vars[i].value = v
			return nil
		}
	}
	return fmt.Errorf("undefined variable: %s", name)
}

func (s *state) varValue(name string) (any, error) {
	for i := len(s.vars) - 1; i >= 0; i-- {
		if s.vars[i].name == name {
			return s.vars[i].value, nil
		}
	}
	return nil, fmt.Errorf("undefined variable: %s", name)
}

// command evaluates one command of a pipeline; final is the previous
// command's value (missing for the first).
func (s *state) command(dot any, c *parse.CommandNode, final any) (any, error) {
	first := c.Args[0]
	args := c.Args[1:]
	switch n := first.(type) {
	case *parse.IdentifierNode:
		return s.call(dot, n.Ident, args, final)
	case *parse.FieldNode:
		return s.fieldChain(dot, dot, n.Ident, args, final)
	case *parse.ChainNode:
		base, err := s.arg(dot, n.Node)
		if err != nil {
			return nil, err
		}
		return s.fieldChain(dot, base, n.Field, args, final)
	case *parse.VariableNode:
		base, err := s.varValue(n.Ident[0])
		if err != nil {
			return nil, err
		}
		return s.fieldChain(dot, base, n.Ident[1:], args, final)
	}
	if len(args) > 0 {
		return nil, fmt.Errorf("can't give argument to non-function %s", first)
	}
	if _, ok := final.(missing); !ok {
		return nil, fmt.Errorf("can't give argument to non-function %s", first)
	}
	return s.arg(dot, first)
}

// arg evaluates an argument.
func (s *state) arg(dot any, n parse.Node) (any, error) {
	switch n := n.(type) {
	case *parse.DotNode:
		return dot, nil
	case *parse.NilNode:
		return nil, errors.New("nil is not a command")
	case *parse.BoolNode:
		return n.True, nil
	case *parse.StringNode:
		return n.Text, nil
	case *parse.NumberNode:
		// text/template's ideal constants.
		t := n.Text
		hexInt := len(t) > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') && !strings.ContainsAny(t, "pP")
		switch {
		case n.IsComplex:
			return nil, fmt.Errorf("complex constant %s is not supported", t)
		case n.IsFloat && !hexInt && !strings.HasPrefix(t, "'") && strings.ContainsAny(t, ".eEpP"):
			return n.Float64, nil
		case n.IsInt:
			return int(n.Int64), nil
		}
		return nil, fmt.Errorf("%s overflows int", t)
	case *parse.FieldNode:
		return s.fieldChain(dot, dot, n.Ident, nil, missing{})
	case *parse.ChainNode:
		base, err := s.arg(dot, n.Node)
		if err != nil {
			return nil, err
		}
		return s.fieldChain(dot, base, n.Field, nil, missing{})
	case *parse.VariableNode:
		base, err := s.varValue(n.Ident[0])
		if err != nil {
			return nil, err
		}
		return s.fieldChain(dot, base, n.Ident[1:], nil, missing{})
	case *parse.PipeNode:
		return s.pipe(dot, n)
	case *parse.IdentifierNode:
		return s.call(dot, n.Ident, nil, missing{})
	}
	return nil, fmt.Errorf("unsupported argument %s", n)
}

// fieldChain looks up the fields in turn from base; the last may be the
// Meta method, which takes the arguments.
func (s *state) fieldChain(dot, base any, names []string, args []parse.Node, final any) (any, error) {
	v := base
	for i, name := range names {
		if name == "Meta" {
			if _, ok := v.(*Data); !ok || i != len(names)-1 {
				return nil, fmt.Errorf("can't evaluate field Meta")
			}
			vals, err := s.args(dot, args, final)
			if err != nil {
				return nil, err
			}
			if len(vals) != 1 {
				return nil, fmt.Errorf("wrong number of args for Meta: want 1 got %d", len(vals))
			}
			if _, ok := vals[0].(string); !ok {
				return nil, fmt.Errorf("wrong type for value; expected string; got %T", vals[0])
			}
			return "", nil // no metadata plugin
		}
		var err error
		if v, err = field(v, name); err != nil {
			return nil, err
		}
	}
	if len(args) > 0 || !isMissing(final) {
		what := "value"
		if len(names) > 0 {
			what = names[len(names)-1]
		}
		return nil, fmt.Errorf("%s has arguments but cannot be invoked as function", what)
	}
	return v, nil
}

// field returns a field of a value of the data.
func field(v any, name string) (any, error) {
	switch v := v.(type) {
	case *Data:
		switch name {
		case "Zone":
			return v.Zone, nil
		case "Name":
			return v.Name, nil
		case "Regex":
			return v.Regex, nil
		case "Match":
			return v.Match, nil
		case "Group":
			return v.Group, nil
		case "Class":
			return v.Class, nil
		case "Type":
			return v.Type, nil
		case "Message":
			return v.Message, nil
		case "Question":
			return v.Question, nil
		case "Remote":
			return v.Remote, nil
		}
	case map[string]string:
		if e, ok := v[name]; ok {
			return e, nil
		}
		return noValue{}, nil
	case *dns.Question:
		if v == nil {
			return nil, fmt.Errorf("nil pointer evaluating .%s", name)
		}
		return field(*v, name)
	case dns.Question:
		switch name {
		case "Name":
			return v.Name, nil
		case "Qtype":
			return v.Qtype, nil
		case "Qclass":
			return v.Qclass, nil
		}
	case *dns.Msg:
		if v == nil {
			return nil, fmt.Errorf("nil pointer evaluating .%s", name)
		}
		switch name {
		case "Id":
			return v.Id, nil
		case "Response":
			return v.Response, nil
		case "Opcode":
			return v.Opcode, nil
		case "Authoritative":
			return v.Authoritative, nil
		case "Truncated":
			return v.Truncated, nil
		case "RecursionDesired":
			return v.RecursionDesired, nil
		case "RecursionAvailable":
			return v.RecursionAvailable, nil
		case "Zero":
			return v.Zero, nil
		case "AuthenticatedData":
			return v.AuthenticatedData, nil
		case "CheckingDisabled":
			return v.CheckingDisabled, nil
		case "Rcode":
			return v.Rcode, nil
		case "Question":
			return v.Question, nil
		case "Answer":
			return v.Answer, nil
		case "Ns":
			return v.Ns, nil
		case "Extra":
			return v.Extra, nil
		}
	}
	return nil, fmt.Errorf("can't evaluate field %s in type %T", name, v)
}

// args evaluates call arguments and appends the piped value.
func (s *state) args(dot any, nodes []parse.Node, final any) ([]any, error) {
	vals := make([]any, 0, len(nodes)+1)
	for _, n := range nodes {
		v, err := s.arg(dot, n)
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	}
	if _, ok := final.(missing); !ok {
		vals = append(vals, final)
	}
	return vals, nil
}

// call runs a function.
func (s *state) call(dot any, name string, nodes []parse.Node, final any) (any, error) {
	switch name {
	case "and", "or":
		// Short-circuit, as text/template: the first false (and) or true
		// (or) argument, else the last.
		if len(nodes) == 0 && isMissing(final) {
			return nil, fmt.Errorf("wrong number of args for %s: want at least 1 got 0", name)
		}
		var v any
		for _, n := range nodes {
			var err error
			if v, err = s.arg(dot, n); err != nil {
				return nil, err
			}
			if truth(v) == (name == "or") {
				return v, nil
			}
		}
		if !isMissing(final) {
			v = final
		}
		return v, nil
	}
	vals, err := s.args(dot, nodes, final)
	if err != nil {
		return nil, err
	}
	want := func(n int) error {
		if len(vals) != n {
			return fmt.Errorf("wrong number of args for %s: want %d got %d", name, n, len(vals))
		}
		return nil
	}
	switch name {
	case "not":
		if err := want(1); err != nil {
			return nil, err
		}
		return !truth(vals[0]), nil
	case "len":
		if err := want(1); err != nil {
			return nil, err
		}
		switch v := vals[0].(type) {
		case string:
			return len(v), nil
		case []string:
			return len(v), nil
		case map[string]string:
			return len(v), nil
		case []dns.Question:
			return len(v), nil
		case []dns.RR:
			return len(v), nil
		}
		return nil, fmt.Errorf("len of type %T", vals[0])
	case "index":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for index: want at least 1 got 0")
		}
		return index(vals[0], vals[1:])
	case "print":
		return fmt.Sprint(printArgs(vals)...), nil
	case "println":
		return fmt.Sprintln(printArgs(vals)...), nil
	case "printf":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for printf: want at least 1 got 0")
		}
		f, ok := vals[0].(string)
		if !ok {
			return nil, fmt.Errorf("wrong type for value; expected string; got %T", vals[0])
		}
		return fmt.Sprintf(f, printArgs(vals[1:])...), nil
	case "parseInt":
		if err := want(3); err != nil {
			return nil, err
		}
		str, ok1 := vals[0].(string)
		base, ok2 := vals[1].(int)
		bits, ok3 := vals[2].(int)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("wrong argument types for parseInt: %T, %T, %T", vals[0], vals[1], vals[2])
		}
		return strconv.ParseUint(str, base, bits)
	case "eq", "ne", "lt", "le", "gt", "ge":
		return compare(name, vals)
	case "html":
		return htmlEscape(joinArgs(vals)), nil
	case "js":
		return jsEscape(joinArgs(vals)), nil
	case "urlquery":
		return url.QueryEscape(joinArgs(vals)), nil
	case "slice":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for slice: want at least 1 got 0")
		}
		return slice(vals[0], vals[1:])
	}
	return nil, fmt.Errorf("function %q not defined", name)
}

func isMissing(v any) bool { _, ok := v.(missing); return ok }

// printArgs turns the data's values into what fmt prints as text/template
// does.
func printArgs(vals []any) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case noValue:
			out[i] = "<no value>"
		default:
			out[i] = v
		}
	}
	return out
}

// printable is how an action prints a value.
func printable(v any) string {
	switch v := v.(type) {
	case nil, noValue:
		return "<no value>"
	case string:
		return v
	case dns.Question:
		// text/template prints an addressable value with its pointer's
		// String method.
		return v.String()
	}
	return fmt.Sprint(printArgs([]any{v})...)
}

// truth is text/template's: false, 0, "", empty and nil values are false.
func truth(v any) bool {
	switch v := v.(type) {
	case nil, noValue, missing:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case int:
		return v != 0
	case uint64:
		return v != 0
	case uint16:
		return v != 0
	case float64:
		return v != 0
	case []string:
		return len(v) > 0
	case map[string]string:
		return len(v) > 0
	case []dns.Question:
		return len(v) > 0
	case []dns.RR:
		return len(v) > 0
	case *dns.Msg:
		return v != nil
	case *dns.Question:
		return v != nil
	}
	return true
}

// toInt is an index as an int.
func toInt(v any) (int, error) {
	switch v := v.(type) {
	case int:
		return v, nil
	case uint64:
		if v > 1<<31 {
			return 0, fmt.Errorf("index out of range: %d", v)
		}
		return int(v), nil
	case uint16:
		return int(v), nil
	}
	return 0, fmt.Errorf("cannot index slice/array with type %T", v)
}

// index is text/template's index over the data's slices and maps.
func index(v any, idx []any) (any, error) {
	for _, i := range idx {
		switch c := v.(type) {
		case map[string]string:
			k, ok := i.(string)
			if !ok {
				return nil, fmt.Errorf("value has type %T; should be string", i)
			}
			v = c[k] // a missing key is the zero value
			continue
		}
		n, err := toInt(i)
		if err != nil {
			return nil, err
		}
		var l int
		switch c := v.(type) {
		case []string:
			l = len(c)
		case []dns.Question:
			l = len(c)
		case []dns.RR:
			l = len(c)
		case string:
			l = len(c)
		default:
			return nil, fmt.Errorf("can't index item of type %T", v)
		}
		if n < 0 || n >= l {
			return nil, fmt.Errorf("error calling index: index out of range: %d", n)
		}
		switch c := v.(type) {
		case []string:
			v = c[n]
		case []dns.Question:
			v = c[n]
		case []dns.RR:
			v = c[n]
		case string:
			v = c[n]
		}
	}
	return v, nil
}

// kind is a comparable value's basic kind.
func kind(v any) (k string, i int64, u uint64, f float64, s string, b bool, err error) {
	switch v := v.(type) {
	case int:
		return "int", int64(v), 0, 0, "", false, nil
	case uint64:
		return "uint", 0, v, 0, "", false, nil
	case uint16:
		return "uint", 0, uint64(v), 0, "", false, nil
	case uint8:
		return "uint", 0, uint64(v), 0, "", false, nil
	case float64:
		return "float", 0, 0, v, "", false, nil
	case string:
		return "string", 0, 0, 0, v, false, nil
	case bool:
		return "bool", 0, 0, 0, "", v, nil
	}
	return "", 0, 0, 0, "", false, fmt.Errorf("invalid type for comparison: %T", v)
}

// compare is text/template's eq, ne, lt, le, gt and ge on basic values.
func compare(op string, vals []any) (any, error) {
	if len(vals) < 2 || op != "eq" && len(vals) != 2 {
		return nil, fmt.Errorf("wrong number of args for %s: got %d", op, len(vals))
	}
	cmp := func(a, b any) (int, error) {
		ka, ia, ua, fa, sa, ba, err := kind(a)
		if err != nil {
			return 0, err
		}
		kb, ib, ub, fb, sb, bb, err := kind(b)
		if err != nil {
			return 0, err
		}
		if ka != kb {
			switch {
			case ka == "int" && kb == "uint":
				if ia < 0 {
					return -1, nil
				}
				ka, ua = "uint", uint64(ia)
			case ka == "uint" && kb == "int":
				if ib < 0 {
					return 1, nil
				}
				kb, ub = "uint", uint64(ib)
			default:
				return 0, errors.New("incompatible types for comparison")
			}
		}
		switch ka {
		case "int":
			return compareOrdered(ia, ib), nil
		case "uint":
			return compareOrdered(ua, ub), nil
		case "float":
			return compareOrdered(fa, fb), nil
		case "string":
			return strings.Compare(sa, sb), nil
		}
		if op != "eq" && op != "ne" {
			return 0, errors.New("invalid type for comparison")
		}
		if ba == bb {
			return 0, nil
		}
		return 1, nil
	}
	if op == "eq" {
		for _, b := range vals[1:] {
			c, err := cmp(vals[0], b)
			if err != nil {
				return nil, err
			}
			if c == 0 {
				return true, nil
			}
		}
		return false, nil
	}
	c, err := cmp(vals[0], vals[1])
	if err != nil {
		return nil, err
	}
	switch op {
	case "ne":
		return c != 0, nil
	case "lt":
		return c < 0, nil
	case "le":
		return c <= 0, nil
	case "gt":
		return c > 0, nil
	}
	return c >= 0, nil
}

func compareOrdered[T int64 | uint64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// joinArgs is text/template's argument text for html, js and urlquery: a
// lone string as it is, anything else as fmt prints it.
func joinArgs(vals []any) string {
	if len(vals) == 1 {
		if s, ok := vals[0].(string); ok {
			return s
		}
	}
	return fmt.Sprint(printArgs(vals)...)
}

// htmlEscape escapes the five HTML specials and NUL as text/template does.
func htmlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			b.WriteString("\uFFFD")
		case '"':
			b.WriteString("&#34;")
		case '\'':
			b.WriteString("&#39;")
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// jsEscape escapes text for JavaScript as text/template does: quotes,
// backslash, <, >, & and = escaped, control characters and unprintable
// runes as \uXXXX.
func jsEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b.WriteString(`\\`)
			case c == '\'':
				b.WriteString(`\'`)
			case c == '"':
				b.WriteString(`\"`)
			case c == '<':
				b.WriteString(`\u003C`)
			case c == '>':
				b.WriteString(`\u003E`)
			case c == '&':
				b.WriteString(`\u0026`)
			case c == '=':
				b.WriteString(`\u003D`)
			case c < ' ':
				fmt.Fprintf(&b, `\u00%02X`, c)
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsPrint(r) {
			b.WriteString(s[i : i+size])
		} else {
			fmt.Fprintf(&b, `\u%04X`, r)
		}
		i += size
	}
	return b.String()
}

// slice is text/template's slice on strings and the data's slices.
func slice(v any, idx []any) (any, error) {
	if len(idx) > 3 {
		return nil, fmt.Errorf("too many slice indexes: %d", len(idx))
	}
	var n int
	switch c := v.(type) {
	case string:
		if len(idx) == 3 {
			return nil, errors.New("cannot 3-index slice a string")
		}
		n = len(c)
	case []string:
		n = len(c)
	case []dns.Question:
		n = len(c)
	case []dns.RR:
		n = len(c)
	default:
		return nil, fmt.Errorf("can't slice item of type %T", v)
	}
	capacity := n
	if c, ok := v.([]string); ok {
		capacity = cap(c)
	}
	if c, ok := v.([]dns.Question); ok {
		capacity = cap(c)
	}
	if c, ok := v.([]dns.RR); ok {
		capacity = cap(c)
	}
	x := [3]int{0, n, capacity}
	for i, a := range idx {
		k, err := toInt(a)
		if err != nil {
			return nil, err
		}
		if k < 0 || k > capacity {
			return nil, fmt.Errorf("index out of range: %d", k)
		}
		x[i] = k
	}
	if x[0] > x[1] {
		return nil, fmt.Errorf("invalid slice index: %d > %d", x[0], x[1])
	}
	if len(idx) == 3 && x[1] > x[2] {
		return nil, fmt.Errorf("invalid slice index: %d > %d", x[1], x[2])
	}
	switch c := v.(type) {
	case string:
		return c[x[0]:x[1]], nil
	case []string:
		return c[x[0]:x[1]:x[2]], nil
	case []dns.Question:
		return c[x[0]:x[1]:x[2]], nil
	case []dns.RR:
		return c[x[0]:x[1]:x[2]], nil
	}
	return nil, fmt.Errorf("can't slice item of type %T", v)
}
