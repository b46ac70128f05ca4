package demo

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The demo fails by itself when the kernel contradicts a record's claim or
// a request fails; this runs it small and checks every proxied row agreed.
func TestDemoKernelAgreesWithRecords(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the demo counts TIME-WAIT with Linux sock_diag")
	}
	var out bytes.Buffer
	err := Run(context.Background(), &out, Options{Conns: 40, Concurrency: 20})
	if _, full := err.(*uncheckedError); full {
		// Nothing contradicted, but the host's table, shared with every
		// test beside this one, was full.
		t.Skipf("%v\n%s", err, out.String())
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	proxied := 0
	for _, sc := range scenarios {
		if !sc.direct {
			proxied++
		}
	}
	words := strings.Join(strings.Fields(out.String()), " ") // verdicts wrap
	if n := strings.Count(words, "; records true"); n != proxied {
		t.Errorf("%d rows' verdicts say the records are true, want %d:\n%s", n, proxied, out.String())
	}
	if n := strings.Count(out.String(), " race "); n < 4 {
		t.Errorf("%d racing rows, want at least 4:\n%s", n, out.String())
	}
	if n := strings.Count(out.String(), " served, "); n != len(scenarios) {
		t.Errorf("%d progress lines, want one a row (%d):\n%s", n, len(scenarios), out.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if n := utf8.RuneCountInString(l); n > width {
			t.Errorf("a line of %d columns, want at most %d: %q", n, width, l)
		}
	}
}
