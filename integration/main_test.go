package integration

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Binaries built once per test binary outlive any single test, so their
	// directory is removed here, after the leak check.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBuildDir()
		os.Exit(code)
	}))
}
