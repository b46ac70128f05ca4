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

// A demo interrupted (Ctrl-C, SIGTERM) fails and concludes nothing: the
// rows after the signal would run empty, and verdicts comparing them would
// claim what was never measured.
func TestDemoInterruptedConcludesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the demo counts TIME-WAIT with Linux sock_diag")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelAfterRow{cancel: cancel}
	err := Run(ctx, out, Options{Conns: 20, Concurrency: 10})
	if err == nil || !strings.Contains(err.Error(), "interrupted after 1 of") {
		t.Errorf("error %v, want interrupted after the first row", err)
	}
	if s := out.String(); strings.Contains(s, "records true") || strings.Count(s, " served, ") != 1 {
		t.Errorf("an interrupted demo printed rows or verdicts past the signal:\n%s", s)
	}
}

// cancelAfterRow is the demo's output, which cancels as the first row's
// progress line is written: the signal comes between rows.
type cancelAfterRow struct {
	bytes.Buffer
	cancel func()
}

func (w *cancelAfterRow) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Contains(w.Buffer.String(), " served, ") {
		w.cancel()
	}
	return n, err
}
