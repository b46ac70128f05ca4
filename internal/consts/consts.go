// Package consts reads the string constants a Go source file declares of
// one type, for tests that check a hand-written list names every one (the
// metrics make a series at zero for each value of such a list, and a
// value left out would appear only at its first event). A package of its
// own so that engine's and policy's tests share one reading and one
// comparison.
package consts

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
)

// Declared returns the values of the string constants of type typ that
// file declares, in order.
func Declared(file, typ string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
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
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						return nil, fmt.Errorf("%s: constant %s: %w", file, lit.Value, err)
					}
					vals = append(vals, s)
				}
			}
		}
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("%s declares no string constants of type %s", file, typ)
	}
	return vals, nil
}

// Unlisted compares list with the string constants of type typ that file
// declares, but those in except: it returns the declared values list
// leaves out, and an error when it cannot read them or list names one
// twice, one excepted or one not declared.
func Unlisted[T ~string](file, typ string, list []T, except ...T) ([]string, error) {
	declared, err := Declared(file, typ)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, v := range list {
		if listed[string(v)] || slices.Contains(except, v) || !slices.Contains(declared, string(v)) {
			return nil, fmt.Errorf("%q is listed twice, excepted or not declared in %s", v, file)
		}
		listed[string(v)] = true
	}
	var missing []string
	for _, v := range declared {
		if !listed[v] && !slices.Contains(except, T(v)) {
			missing = append(missing, v)
		}
	}
	return missing, nil
}
