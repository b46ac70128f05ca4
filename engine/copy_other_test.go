//go:build !linux

package engine

import "os"

// exitUnlessPipesLeft ends the test binary (goleak's cleanup): only Linux
// splices.
func exitUnlessPipesLeft(code int) { os.Exit(code) }
