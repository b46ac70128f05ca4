package main

import (
	"bytes"
	"strings"
	"testing"
)

// Flags the bench cannot honour are refused before anything starts.
func TestRunRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-teardown", "none"},
		{"-load-cpus", "0"},
		{"-proxy-cpus", "x"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), args[0]) || out.Len() > 0 {
			t.Errorf("run %q: exit %d, stderr %q, stdout %q; want 2 and the flag named", args, code, errOut.String(), out.String())
		}
	}
}
