package main

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// fakeRouting stands in for nft and ip: it keeps a count of each thing
// added and fails a delete of what is not there as they do.
type fakeRouting struct {
	have map[string]int // "nft", "rule -4", "route -6", …
	ran  []string
}

func (f *fakeRouting) run(name string, args []string, stdin string) (string, error) {
	f.ran = append(f.ran, name+" "+strings.Join(args, " "))
	key := "nft"
	if name == "ip" {
		key = args[1] + " " + args[0]
	}
	switch {
	case slices.Contains(args, "add") || slices.Contains(args, "-f"):
		f.have[key]++
	case f.have[key] == 0:
		return "Error: No such file or directory\n", errors.New("exit status 2")
	default:
		f.have[key]--
	}
	return "", nil
}

func TestTransparentSetupTeardownIdempotent(t *testing.T) {
	f := &fakeRouting{have: map[string]int{}}
	var out, errOut strings.Builder
	for _, action := range []string{"setup", "setup", "teardown", "teardown"} {
		if rc := cmdTransparent([]string{action, "-mark", "0x10", "-table", "200"}, &out, &errOut, f.run); rc != 0 {
			t.Fatalf("%s: exit %d: %s", action, rc, errOut.String())
		}
		if action == "setup" {
			want := map[string]int{"nft": 1, "rule -4": 1, "route -4": 1, "rule -6": 1, "route -6": 1}
			if !maps.Equal(f.have, want) {
				t.Fatalf("after setup: %v, want one of each: %v", f.have, want)
			}
		}
	}
	for k, n := range f.have {
		if n != 0 {
			t.Errorf("after teardown %d %s left", n, k)
		}
	}
	if !slices.Contains(f.ran, "ip -4 rule add fwmark 0x10 lookup 200") || !slices.Contains(f.ran, "ip -6 route add local ::/0 dev lo table 200") {
		t.Errorf("commands ran: %q", f.ran)
	}
	if !strings.Contains(out.String(), "socket transparent 1 meta mark set 0x10 accept") {
		t.Errorf("printed ruleset lacks the mark rule:\n%s", out.String())
	}
}

func TestTransparentRefusesBadFlags(t *testing.T) {
	f := &fakeRouting{have: map[string]int{}}
	for _, args := range [][]string{{}, {"start"}, {"setup", "-mark", "0"}, {"setup", "-table", "254"}, {"setup", "-table", "0"},
		{"setup", "-table", "4294967296"}, {"setup", "extra"}} {
		var out, errOut strings.Builder
		if rc := cmdTransparent(args, &out, &errOut, f.run); rc != 2 {
			t.Errorf("%q: exit %d, want 2", args, rc)
		}
	}
	if len(f.ran) != 0 {
		t.Errorf("ran %q on bad flags", f.ran)
	}
}

// ip(8) takes routing table ids up to 2^32-1: so does -table.
func TestTransparentTakesAnyTableIPTakes(t *testing.T) {
	f := &fakeRouting{have: map[string]int{}}
	var out, errOut strings.Builder
	if rc := cmdTransparent([]string{"setup", "-dry-run", "-table", "4294967295"}, &out, &errOut, f.run); rc != 0 || !strings.Contains(out.String(), "table 4294967295") {
		t.Errorf("-table 4294967295: exit %d, %q %q; want 0 and the table used", rc, out.String(), errOut.String())
	}
}
