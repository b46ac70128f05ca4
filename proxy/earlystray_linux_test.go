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
// An answer that comes while the body is on its way tells the client the
// connection closes, and a request the client sends behind the body anyway
// is never answered with them: the backend connection, which has not
// taken all of the request when the exchange ends, is not reused.
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
		br.Discard(1)                     // the body's first byte: it is on its way
		time.Sleep(20 * time.Millisecond) // the backend's pace: its parser takes a while
		io.WriteString(c, "HTTP/1.1 400 Bad\r\nContent-Length: 5\r\nConnection: close\r\n\r\nstray")
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	// paced: the answer comes while the body is on its way; at once: the
	// proxy may have written all of the body into its socket before it
	// reads the answer, which comes before the backend's kernel took it
	for i, paced := range []bool{true, true, true, false, false, false, false, false} {
		c := dialClient(t, h.addr, false)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n := 1 << 20
		head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
		get := "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
		first := 64 << 10
		if !paced {
			first = n
		}
		go func() {
			io.WriteString(c, head)
			c.Write(make([]byte, first))
			if !paced {
				io.WriteString(c, get)
			}
		}()
		br := bufio.NewReader(c)
		status, got, closing := readBody(t, br)
		// Paced, the answer came with body bytes still to send, and says
		// the connection closes; at once, that is told only at the
		// exchange's end (the body not all taken): the connection ends
		// all the same.
		if status != 413 || string(got) != "early" || paced && !closing {
			t.Errorf("%d (paced %v): first response %d %q (closing %v), want 413 early, Connection: close", i, paced, status, got, closing)
		}
		if paced {
			go func() {
				c.Write(make([]byte, n-first))
				io.WriteString(c, get)
			}()
		}
		if r, err := http.ReadResponse(br, nil); err == nil {
			b, _ := io.ReadAll(r.Body)
			t.Errorf("%d (paced %v): a response after the one that closes: %d %q", i, paced, r.StatusCode, b)
		}
		c.Close()
		if td := h.record(t); td.BackRequests != 1 {
			t.Errorf("%d (paced %v): record: %d backend requests (outcome %s, %v), want 1: the connection that answered early is not reused", i, paced, td.BackRequests, td.Outcome, td.Err)
		}
	}
}
