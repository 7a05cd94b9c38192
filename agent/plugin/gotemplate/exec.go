package gotemplate

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/template/parse"

	"github.com/miekg/dns"
)

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
		for i := range v {
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
	for _, v := range slices.Backward(s.vars) {
		if v.name == name {
			return v.value, nil
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
