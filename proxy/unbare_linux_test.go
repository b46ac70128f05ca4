package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// An http1 exchange on a goroutine takes a backend connection the loops
// dialed, and the process is out of descriptors as it makes it a Go
// connection: the client gets a 503, the record says error (the proxy's
// own failure, not a dial's nor a panic's), and the connection is closed
// and its pool slot freed; without that every such failure kept a slot
// and the pool, once full, answered 503 for good. The next request is
// served.
func TestHTTP1LoopBackendConnectionNotLostOutOfDescriptors(t *testing.T) {
	if testRelay != "loop" {
		t.Skip("only the loops dial bare backend connections")
	}
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a connection the proxy lost ends too
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	var failed atomic.Int32
	unbareHook = func() error {
		if failed.Add(1) == 1 {
			return syscall.EMFILE
		}
		return nil
	}
	t.Cleanup(func() { unbareHook = nil })
	b := http1Backend(be)
	b.Pool.MaxConns = 1
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	ask := func(req string) (int, string) {
		c := dialClient(t, h.addr, false)
		defer c.Close()
		io.WriteString(c, req)
		status, body, _ := readBody(t, bufio.NewReader(c))
		return status, string(body)
	}
	const get = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	// The loop serves a GET and keeps its connection in the pool, bare.
	if status, body := ask(get); status != 200 || body != "ok" {
		t.Fatalf("first request: %d %q, want 200 ok", status, body)
	}
	h.record(t)
	// An upgrade with a body is not the loop's: a goroutine takes the
	// pooled connection.
	if status, _ := ask("POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 2\r\n\r\nhi"); status != 503 {
		t.Fatalf("out of descriptors: status %d, want 503", status)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeError || !errors.Is(td.Err, syscall.EMFILE) {
		t.Errorf("record: outcome %s (%v), want error with EMFILE", td.Outcome, td.Err)
	}
	if failed.Load() == 0 {
		t.Fatal("no backend connection went from the loops to a goroutine: the test proves nothing")
	}
	if st := h.srv.PoolStats()["app"]; st.InUse != 0 {
		t.Errorf("the pool counts %d connection(s) in use after the failed session: its slot is lost", st.InUse)
	}
	if status, body := ask(get); status != 200 || body != "ok" {
		t.Errorf("next request: %d %q, want 200 ok (a pool of one)", status, body)
	}
}
