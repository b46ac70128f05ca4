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

// exited tells a process that ended from one still running: a round
// whose candidate ended is thrown away, not reported with the figures of
// whatever answered in its place.
func TestProcExited(t *testing.T) {
	var ps procs
	dir := t.TempDir()
	gone, err := ps.start("true", dir+"/true.log", "true")
	if err != nil {
		t.Fatal(err)
	}
	<-gone.done
	if !gone.exited() {
		t.Error("a process that ended: exited() false")
	}
	running, err := ps.start("sleep", dir+"/sleep.log", "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if running.exited() {
		t.Error("a running process: exited() true")
	}
	ps.stop(running)
	if !running.exited() {
		t.Error("a stopped process: exited() false")
	}
}
