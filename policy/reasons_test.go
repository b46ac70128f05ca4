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
