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

// The same with a chunked body that the backend takes whole after its
// early answer, as a request of its own, and answers: the client's GET
// pipelined behind the body never gets that stray answer, with and
// without Expect: 100-continue, and an early answer that comes while the
// body is on its way says the connection closes (on goroutines a chunked
// body went out through the spill, or beside the wait for the answer,
// and the connection, all of whose request the backend had taken, was
// reused for the GET: it got the stray answer, recorded ok). The answer
// comes while the body is on its way: sent at once, the whole body may
// be in the backend's hands before the proxy sees the answer, and then
// nothing tells it early (a gap the guarantees name).
func TestHTTP1EarlyAnswerToAChunkedBodyEndsTheConnection(t *testing.T) {
	answered := make(chan struct{}, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for first := true; ; first = false {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if first {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
				answered <- struct{}{}
				io.Copy(io.Discard, req.Body) // the rest, taken for a request of its own
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	chunk := fmt.Sprintf("4000\r\n%s\r\n", make([]byte, 0x4000))
	const chunks = 183 // 3 MB
	for _, expect := range []string{"", "Expect: 100-continue\r\n"} {
		for i := range 3 {
			name := fmt.Sprintf("%q %d", expect, i)
			c := dialClient(t, h.addr, false)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() {
				io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"+expect+"\r\n")
				for i := range chunks {
					if i == 5 { // 80 KiB, past the spill: then the answer
						<-answered
					}
					if _, err := io.WriteString(c, chunk); err != nil {
						return
					}
				}
				io.WriteString(c, "0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			}()
			br := bufio.NewReader(c)
			r, err := http.ReadResponse(br, nil)
			for err == nil && r.StatusCode == 100 {
				r, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got, _ := io.ReadAll(r.Body)
			if string(got) != "early" || !r.Close {
				t.Errorf("%s: first response %q (Connection: close %v), want early, closing", name, got, r.Close)
			}
			if r, err := http.ReadResponse(br, nil); err == nil {
				b, _ := io.ReadAll(r.Body)
				t.Errorf("%s: a response after the early one: %d %q", name, r.StatusCode, b)
			}
			c.Close()
			if td := h.record(t); td.BackRequests != 1 {
				t.Errorf("%s: record: %d backend requests (outcome %s, %v), want 1: the connection that answered early is not reused", name, td.BackRequests, td.Outcome, td.Err)
			}
		}
	}
}
