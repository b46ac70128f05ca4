package policy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// Reasons names every Reason the package declares but ReasonNone: the
// metrics make a series at zero for each, and one left out would appear
// only at its first close.
func TestReasonsListsEveryReason(t *testing.T) {
	listed := map[Reason]bool{}
	for _, r := range Reasons {
		listed[r] = true
	}
	f, err := parser.ParseFile(token.NewFileSet(), "decide.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				n++
				if r, _ := strconv.Unquote(lit.Value); r != "" && !listed[Reason(r)] {
					t.Errorf("reason %q is declared but not in Reasons", r)
				}
			}
		}
	}
	if n < 2 || len(listed) != len(Reasons) {
		t.Errorf("%d reasons declared, Reasons %v (a repeat?)", n, Reasons)
	}
}
