package proxy

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// Connections the kernel completed that no accept took yet when draining
// began are served, not reset by the listener's close: each client's
// connect had succeeded and its request was on its way (a review found
// such clients reset with no record at SIGTERM). The accept loop is held
// in its first session's start while the others wait in the kernel's
// queue; Drain then closes the listener. Every client gets its echo and
// every connection a record.
func TestDrainServesTheAcceptQueue(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Bool
	acceptedHook = func() { // set before the accept loop starts: it reads it unlocked
		if held.CompareAndSwap(false, true) {
			<-release
		}
	}
	t.Cleanup(func() { acceptedHook = nil })
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		defaultBackend(loopback.Serve(t, loopback.Echo)), onGoroutines)

	const n = 6
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			close(release)
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c.(*net.TCPConn)
		if _, err := fmt.Fprintf(c, "hello %d", i); err != nil {
			t.Fatal(err)
		}
		if err := conns[i].CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	h.srv.Drain() // the first connection is held in its start; the rest wait in the queue
	close(release)
	for i, c := range conns {
		got, err := io.ReadAll(c)
		if want := fmt.Sprintf("hello %d", i); string(got) != want || err != nil {
			t.Errorf("client %d read %q, %v; want %q, then EOF", i, got, err, want)
		}
	}
	for range n {
		if td := h.record(t); td.Outcome != engine.OutcomeOK {
			t.Errorf("record: outcome %s (%v); want ok", td.Outcome, td.Err)
		}
	}
}
