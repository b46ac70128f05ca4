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

// The demo fails by itself when the kernel contradicts a record's claim or
// a request fails; this runs it small and checks every proxied row agreed.
func TestDemoKernelAgreesWithRecords(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the demo counts TIME-WAIT with Linux sock_diag")
	}
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Conns: 40, Concurrency: 20}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	proxied := 0
	for _, sc := range scenarios {
		if !sc.direct {
			proxied++
		}
	}
	if n := strings.Count(out.String(), " agree\n"); n != proxied {
		t.Errorf("%d rows agree, want %d:\n%s", n, proxied, out.String())
	}
	if n := strings.Count(out.String(), " race "); n < 4 {
		t.Errorf("%d racing rows, want at least 4:\n%s", n, out.String())
	}
}
