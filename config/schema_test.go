package config

import (
	"strings"
	"testing"
)

// Every key of the schema is documented, written once, inside a table the
// schema has, and has a default or an example value to show.
func TestSchemaIsWhole(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.path] {
			t.Errorf("%s: written twice", k.path)
		}
		seen[k.path] = true
		if strings.TrimSpace(k.doc) == "" {
			t.Errorf("%s: no documentation", k.path)
		}
		if i := strings.LastIndex(k.path, "."); i > 0 && !seen[k.path[:i]] {
			t.Errorf("%s: its table %s is not listed before it", k.path, k.path[:i])
		}
		switch {
		case k.kind != "" && k.at != nil:
			t.Errorf("%s: a table with a field", k.path)
		case k.kind == "" && k.at == nil:
			t.Errorf("%s: a key without a field", k.path)
		case k.kind == "" && (k.def == nil) == (k.example == nil):
			t.Errorf("%s: give either a default or, for a key that must be written, an example", k.path)
		}
	}
}
