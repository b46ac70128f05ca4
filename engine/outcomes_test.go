package engine

import (
	"testing"

	"github.com/closeproxy/closeproxy/internal/consts"
)

// Outcomes names every Outcome the package declares: the metrics make a
// series at zero for each, and one left out would appear only at its
// first session.
func TestOutcomesListsEveryOutcome(t *testing.T) {
	declared, err := consts.Declared("record.go", "Outcome")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[Outcome]bool{}
	for _, o := range Outcomes {
		listed[o] = true
	}
	for _, v := range declared {
		if !listed[Outcome(v)] {
			t.Errorf("outcome %q is declared but not in Outcomes", v)
		}
	}
	if len(listed) != len(Outcomes) || len(Outcomes) != len(declared) {
		t.Errorf("Outcomes %v against %d declared (a repeat?)", Outcomes, len(declared))
	}
}
