package policy

import (
	"testing"

	"github.com/closeproxy/closeproxy/internal/consts"
)

// Reasons names every Reason the package declares but ReasonNone: the
// metrics make a series at zero for each, and one left out would appear
// only at its first close.
func TestReasonsListsEveryReason(t *testing.T) {
	missing, err := consts.Unlisted("decide.go", "Reason", Reasons, ReasonNone)
	if err != nil || len(missing) > 0 {
		t.Errorf("reasons declared but not in Reasons: %q (%v)", missing, err)
	}
}

// Closes names every Close but CloseNone, and Sides every Side, for the
// same series at zero.
func TestClosesAndSidesListEveryValue(t *testing.T) {
	missing, err := consts.Unlisted("policy.go", "Close", Closes, CloseNone)
	if err != nil || len(missing) > 0 {
		t.Errorf("closes declared but not in Closes: %q (%v)", missing, err)
	}
	missing, err = consts.Unlisted("policy.go", "Side", Sides)
	if err != nil || len(missing) > 0 {
		t.Errorf("sides declared but not in Sides: %q (%v)", missing, err)
	}
}
