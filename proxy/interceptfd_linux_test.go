package proxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// On the loops, a listener with intercept has its accepted descriptor
// made a Go connection; when that fails (the process out of descriptors)
// the connection is refused with an RST and still gets its record,
// outcome error, as every accepted connection does. It was closed with
// no record and no count (its client read a clean EOF after its request).
func TestInterceptedAcceptOutOfDescriptorsIsRecorded(t *testing.T) {
	if testRelay != "loop" {
		t.Skip("the loops accept bare descriptors")
	}
	var fail atomic.Bool
	fail.Store(true)
	frontConnHook = func() error {
		if fail.CompareAndSwap(true, false) {
			return &net.OpError{Op: "file", Net: "file+net", Err: syscall.EMFILE}
		}
		return nil
	}
	t.Cleanup(func() { frontConnHook = nil })
	h := startProxy(t, config.Listener{Intercept: config.InterceptRedirect, Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		defaultBackend(httpBackend(t, true)))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the refused client read %v, want a reset", err)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeError || td.Err == nil || !strings.Contains(td.Err.Error(), "too many open files") {
		t.Errorf("record: %s (%v), want error naming the descriptors", td.Outcome, td.Err)
	}
	if got, err := get(t, h.addr, false); err != nil || got != response {
		t.Errorf("the next connection: %q %v, want served", got, err)
	}
	h.record(t)
}
