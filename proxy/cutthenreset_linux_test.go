package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend that ends its response early (Content-Length 100, 3 bytes,
// then its close), after the client had reset: the cut is the backend's,
// recorded backend_reset on both relays. On goroutines the client's
// reset, found by the time the proxy looked, made it client_reset with
// the backend's "unexpected EOF" as its error (153 of 500 in a review).
// The backend closes only once the client's reset reached the proxy's
// kernel (its socket left /proc/net/tcp).
func TestHTTP1ResponseCutAfterTheClientResetIsTheBackends(t *testing.T) {
	reset := make(chan struct{})
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
		<-reset
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	client, proxy := c.LocalAddr().String(), c.RemoteAddr().String()
	c.SetLinger(0)
	c.Close()
	waitGone(t, client, proxy)
	close(reset)
	if td := h.record(t); td.Outcome != engine.OutcomeBackendReset {
		t.Errorf("record: %s (%v), want backend_reset", td.Outcome, td.Err)
	}
}
