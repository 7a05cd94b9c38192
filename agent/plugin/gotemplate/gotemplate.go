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
	"text/template/parse"

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
