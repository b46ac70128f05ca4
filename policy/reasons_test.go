package policy

import (
	"testing"

	"github.com/closeproxy/closeproxy/internal/consts"
)

// Reasons names every Reason the package declares but ReasonNone: the
// metrics make a series at zero for each, and one left out would appear
// only at its first close.
func TestReasonsListsEveryReason(t *testing.T) {
	declared, err := consts.Declared("decide.go", "Reason")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[Reason]bool{}
	for _, r := range Reasons {
		listed[r] = true
	}
	for _, v := range declared {
		if v != "" && !listed[Reason(v)] {
			t.Errorf("reason %q is declared but not in Reasons", v)
		}
	}
	if len(listed) != len(Reasons) || len(Reasons) != len(declared)-1 {
		t.Errorf("Reasons %v against %d declared, ReasonNone among them (a repeat?)", Reasons, len(declared))
	}
}
