package demo

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The demo fails by itself when a row's kernel count and records disagree;
// this runs it small and checks the table is there.
func TestDemoKernelAgreesWithRecords(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the demo counts TIME-WAIT with Linux sock_diag")
	}
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Conns: 40, Concurrency: 20}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), " yes\n"); n != len(scenarios)-2 {
		t.Errorf("%d rows agree, want %d:\n%s", n, len(scenarios)-2, out.String())
	}
}
