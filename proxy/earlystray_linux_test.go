package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend that answers before it read the request body (an early 413)
// without closing, and then sends more (its parser took the body for a
// request and answers that): those bytes answer nothing the proxy sent.
// The early answer tells the client the connection closes, and a request
// the client sends behind the body anyway is never answered with them:
// the backend connection is not reused.
func TestHTTP1EarlyAnswerEndsTheConnection(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Method == http.MethodGet {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nget")
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 5\r\n\r\nearly")
		br.Discard(1) // the body's first byte: it is on its way
		io.WriteString(c, "HTTP/1.1 400 Bad\r\nContent-Length: 5\r\nConnection: close\r\n\r\nstray")
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	for i := range 3 {
		c := dialClient(t, h.addr, false)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n := 1 << 20
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
		c.Write(make([]byte, 64<<10))
		br := bufio.NewReader(c)
		status, got, closing := readBody(t, br) // the answer came while the body was on its way
		if status != 413 || string(got) != "early" || !closing {
			t.Errorf("%d: first response %d %q (closing %v), want 413 early, Connection: close", i, status, got, closing)
		}
		go func() {
			c.Write(make([]byte, n-64<<10))
			io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		}()
		if r, err := http.ReadResponse(br, nil); err == nil {
			b, _ := io.ReadAll(r.Body)
			t.Errorf("%d: a response after the one that closes: %d %q", i, r.StatusCode, b)
		}
		c.Close()
		if td := h.record(t); td.BackRequests != 1 {
			t.Errorf("%d: record: %d backend requests (outcome %s, %v), want 1: the connection that answered early is not reused", i, td.BackRequests, td.Outcome, td.Err)
		}
	}
}
