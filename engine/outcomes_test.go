package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// Outcomes names every Outcome the package declares: the metrics make a
// series at zero for each, and one left out would appear only at its
// first session.
func TestOutcomesListsEveryOutcome(t *testing.T) {
	listed := map[Outcome]bool{}
	for _, o := range Outcomes {
		listed[o] = true
	}
	for _, v := range declared(t, "record.go", "Outcome") {
		if !listed[Outcome(v)] {
			t.Errorf("outcome %q is declared but not in Outcomes", v)
		}
	}
	if len(listed) != len(Outcomes) {
		t.Errorf("Outcomes repeats an outcome: %v", Outcomes)
	}
}

// declared returns the string values of the constants of type typ
// declared in file.
func declared(t *testing.T, file, typ string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typ {
				continue
			}
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					vals = append(vals, s)
				}
			}
		}
	}
	if len(vals) == 0 {
		t.Fatalf("no constants of type %s in %s", typ, file)
	}
	return vals
}
