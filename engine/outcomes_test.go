package engine

import (
	"testing"

	"github.com/closeproxy/closeproxy/internal/consts"
)

// Outcomes names every Outcome the package declares: the metrics make a
// series at zero for each, and one left out would appear only at its
// first session.
func TestOutcomesListsEveryOutcome(t *testing.T) {
	missing, err := consts.Unlisted("record.go", "Outcome", Outcomes)
	if err != nil || len(missing) > 0 {
		t.Errorf("outcomes declared but not in Outcomes: %q (%v)", missing, err)
	}
}
