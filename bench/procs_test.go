package main

import "testing"

// freeAddr never hands out an address twice in a run, though the kernel
// may offer a port just closed again: two candidates' addresses (or a
// candidate's and its backend's) must differ.
func TestFreeAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
}
