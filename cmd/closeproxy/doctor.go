package main

import (
	"fmt"
	"io"
)

// cmdDoctor is filled in by the doctor package's wiring.
func cmdDoctor(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "closeproxy doctor: not built yet")
	return 2
}
