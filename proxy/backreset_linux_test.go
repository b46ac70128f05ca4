package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend that sends part of a large response and resets once the
// proxy's kernel acknowledged all of it, to an http1 client that is not
// reading yet: the client, reading later, gets every byte the backend
// sent, then an RST (never a clean end, the response is cut). Those
// bytes wait in the client leg's send queue; a reset at once would drop
// them. A body of known length (spliced on a loop) and a chunked one; a
// backend that closes early with a FIN cuts the response the same way.
func TestHTTP1BackendResetDeliversWhatCameBeforeIt(t *testing.T) {
	body := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(17, 0))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct {
		name string
		sent []byte // what the backend sends before its reset
		fin  bool   // it closes with a FIN instead
	}{
		{"length", append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n"), body...), false},
		{"chunked", append([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"), body...), false},
		{"length_fin", append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n"), body...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reset := make(chan error, 1)
			be := loopback.Serve(t, func(c *net.TCPConn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					reset <- err
					return
				}
				if _, err := c.Write(tc.sent); err != nil {
					reset <- err
					return
				}
				if !loopback.Acked(c, 5*time.Second) {
					reset <- errors.New("the proxy's kernel left bytes unacknowledged after 5 s")
					return
				}
				if !tc.fin {
					_ = c.SetLinger(0)
				}
				reset <- c.Close()
			})
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
			c := dialClient(t, h.addr, false)
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if err := <-reset; err != nil {
				t.Fatalf("backend: %v", err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c) // only now, after the backend's reset
			if !bytes.Equal(got, tc.sent) || !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the client read %d of %d bytes (equal %v), then %v; want all of them, then ECONNRESET",
					len(got), len(tc.sent), bytes.Equal(got, tc.sent), err)
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeBackendReset || !td.Front.Cut || td.Front.Close != policy.CloseReset {
				t.Errorf("record: outcome %s (%v), front cut %v close %s; want backend_reset, cut, reset",
					td.Outcome, td.Err, td.Front.Cut, td.Front.Close)
			}
		})
	}
}

// A backend that resets mid-response while the client is not reading:
// once the proxy has read all the backend sent, the backend connection's
// pool slot is free while what it sent still waits for the client (up to
// drain_timeout), and the client, reading later, gets every byte, then
// an RST.
func TestHTTP1BackendResetFreesItsSlotWhileTheClientLags(t *testing.T) {
	body := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(19, 0))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	sent := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n"), body...)
	reset := make(chan error, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			reset <- err
			return
		}
		if _, err := c.Write(sent); err != nil {
			reset <- err
			return
		}
		if !loopback.Acked(c, 5*time.Second) {
			reset <- errors.New("the proxy's kernel left bytes unacknowledged after 5 s")
			return
		}
		_ = c.SetLinger(0)
		reset <- c.Close()
	})
	cl := testClose(policy.TargetProxy, policy.FallbackFIN)
	cl.DrainTimeout = 30 * time.Second
	h := startProxy(t, config.Listener{Close: cl}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-reset; err != nil {
		t.Fatalf("backend: %v", err)
	}
	// The pool says nothing when a slot frees: its count is polled.
	waitFor(t, 3*time.Second, "after the backend's reset, with the client not reading, the pool's slot freed",
		func() bool { return h.srv.PoolStats()["app"].InUse == 0 })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if !bytes.Equal(got, sent) || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client read %d of %d bytes (equal %v), then %v; want all of them, then ECONNRESET",
			len(got), len(sent), bytes.Equal(got, sent), err)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeBackendReset || !td.Front.Cut || td.Front.Close != policy.CloseReset {
		t.Errorf("record: outcome %s (%v), front cut %v close %s; want backend_reset, cut, reset",
			td.Outcome, td.Err, td.Front.Cut, td.Front.Close)
	}
}
