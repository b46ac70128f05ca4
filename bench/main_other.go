//go:build !linux

// Command bench measures closeproxy beside HAProxy and nginx stream; it
// reads /proc and drives Linux-only tools, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: needs Linux (it reads /proc and runs HAProxy, nginx and wrk)")
	os.Exit(2)
}
