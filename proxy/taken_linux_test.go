package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// A backend that answers a request before it read its body, then reads
// the body and throws it away and keeps the connection (nginx does, for a
// location that reads none): the answer says nothing of a close, and a
// keep-alive client's next request on the connection is answered, as
// direct. Here the proxy wrote all of the request before the answer came
// (nothing told it early), and the backend's kernel had not taken all of
// it when the exchange ended: a backend with a small receive buffer that
// reads the body only once the client has its answer. The connection used
// to end after the answer (the client's next request met its end: 13 of 40
// through stock nginx with 100 KB bodies); now it waits for the backend to
// take the rest. A backend that never takes it, or that sends its FIN or
// a reset while the proxy waits, keeps the old end: the client's
// connection ends after the answer, the backend's is not reused. A client
// that aborts or half-closes while the proxy waits leaves the backend
// connection whole for the next client.
func TestHTTP1BackendThatDiscardsAnEarlyAnsweredBodyKeepsTheConnection(t *testing.T) {
	const size = 256 << 10
	got := make(chan struct{}, 1)   // the client has the answer: the backend reads the body on
	never := make(chan struct{})    // the test ends: the backend lets go
	gone := make(chan struct{})     // the client of a backend that never reads saw the end
	sums := make(chan [32]byte, 16) // what the backend read of each body
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := loopback.ServeOn(t, l.(*net.TCPListener), func(c *net.TCPConn) {
		defer c.Close()
		cr := &countingReader{r: c}
		br := bufio.NewReaderSize(cr, 4<<10)
		for {
			cr.n = int64(br.Buffered())
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method != http.MethodPost {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
				continue
			}
			// The answer comes once the proxy wrote all of the request
			// into its socket: nothing tells it early.
			if err := allWritten(c, &cr.n, int64(requestSize(req.URL.Path, size))); err != nil {
				t.Error(err)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
			if req.URL.Path == "/fin" || req.URL.Path == "/reset" {
				// It ends its side while the proxy waits for it to
				// take the body: a FIN, then it reads the body on (its
				// kernel takes it all), or a reset.
				select {
				case <-got:
				case <-never:
					return
				}
				if req.URL.Path == "/reset" {
					c.SetLinger(0)
					return
				}
				c.CloseWrite()
				io.Copy(io.Discard, br)
				return
			}
			if req.URL.Path == "/never" {
				select { // then it closes, the body unread: a reset
				case <-gone:
				case <-never:
				}
				return
			}
			select {
			case <-got:
			case <-never:
				return
			}
			h := sha256.New()
			io.Copy(h, req.Body)
			sums <- [32]byte(h.Sum(nil))
		}
	})
	t.Cleanup(func() { close(never) })
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	want := sha256.Sum256(body)
	post := func(c *net.TCPConn, path string) *bufio.Reader {
		t.Helper()
		if _, err := c.Write(append([]byte(postHead(path, size)), body...)); err != nil {
			t.Fatalf("%s: write request: %v", path, err)
		}
		br := bufio.NewReader(c)
		status, b, closing := readBody(t, br)
		if status != 200 || string(b) != "early" || closing {
			// The proxy saw the answer while it still wrote the body:
			// the premise of this test, not the proxy, failed.
			t.Fatalf("%s: answer %d %q, closing %v: want 200 early, the connection kept", path, status, b, closing)
		}
		return br
	}
	pooled := false // the last session left its backend connection in the pool
	for i := range 5 {
		c := dialClient(t, h.addr, false)
		br := post(c, "/discard")
		got <- struct{}{}
		if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("%d: next request: %v", i, err)
		}
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%d: the next request on the connection: %v (the connection ended after the early answer)", i, err)
		}
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 || string(b) != "next" {
			t.Errorf("%d: next answer %d %q, want 200 next", i, r.StatusCode, b)
		}
		if sum := <-sums; sum != want {
			t.Errorf("%d: the backend read a body whose SHA-256 differs", i)
		}
		c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.BackRequests != 2 || td.Back.Close != policy.ClosePooled {
			t.Errorf("%d: record %s (%v), %d backend requests, back close %s: want ok, 2 on one connection, pooled",
				i, td.Outcome, td.Err, td.BackRequests, td.Back.Close)
		}
		if i > 0 && !td.BackPooled {
			t.Errorf("%d: the backend connection was not the last session's", i)
		}
		pooled = true
	}

	// The client aborts while the proxy waits for the backend to read:
	// the backend connection still goes back to the pool once it did.
	c := dialClient(t, h.addr, false)
	post(c, "/discard")
	c.SetLinger(0)
	c.Close()
	got <- struct{}{}
	if sum := <-sums; sum != want {
		t.Errorf("abort: the backend read a body whose SHA-256 differs")
	}
	if td := h.record(t); td.BackRequests != 1 || td.Back.Close != policy.ClosePooled {
		t.Errorf("abort: record %s (%v), %d backend requests, back close %s: want the connection pooled",
			td.Outcome, td.Err, td.BackRequests, td.Back.Close)
	}

	// The client half-closes once it has the answer, while the proxy
	// waits: its connection ends in order after the wait, and the
	// backend's still goes back to the pool.
	c = dialClient(t, h.addr, false)
	halfBr := post(c, "/discard")
	c.CloseWrite()
	got <- struct{}{}
	if sum := <-sums; sum != want {
		t.Errorf("half-close: the backend read a body whose SHA-256 differs")
	}
	if _, err := halfBr.ReadByte(); err != io.EOF {
		t.Errorf("half-close: after the answer %v, want EOF", err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 1 || td.Back.Close != policy.ClosePooled {
		t.Errorf("half-close: record %s (%v), %d backend requests, back close %s: want ok, the connection pooled",
			td.Outcome, td.Err, td.BackRequests, td.Back.Close)
	}

	// A backend that ends its side during the wait, by a FIN (then takes
	// the body all the same) or a reset: the wait ends there, and the
	// client's connection after the answer, as any end of the backend's
	// does, its record saying how (on goroutines the FIN was missed and
	// the connection went to the pool; a reset, waited out for 50 ms,
	// said late_data).
	for _, end := range []string{"/fin", "/reset"} {
		c := dialClient(t, h.addr, false)
		br := post(c, end)
		got <- struct{}{}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s: after the answer %v, want EOF: the connection ends with the backend's", end, err)
		}
		c.Close()
		td := h.record(t)
		want := engine.OutcomeOK
		if end == "/reset" {
			want = engine.OutcomeBackendReset
		}
		if td.Outcome != want || td.BackRequests != 1 || td.Back.Close == policy.ClosePooled {
			t.Errorf("%s: record %s (%v), %d backend requests, back close %s: want %s, one request, not pooled",
				end, td.Outcome, td.Err, td.BackRequests, td.Back.Close, want)
		}
		pooled = false // the next session dials
	}

	// A backend that never reads the body: the connection ends after the
	// answer, and the backend's is not reused.
	c = dialClient(t, h.addr, false)
	br := post(c, "/never")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("never: after the answer %v, want EOF: the connection ends", err)
	}
	close(gone)
	c.Close()
	if td := h.record(t); td.BackRequests != 1 || td.Back.Close == policy.ClosePooled || td.BackPooled != pooled {
		t.Errorf("never: record %s (%v), %d backend requests, back close %s, pooled %v: want one request on the pooled connection, not pooled again",
			td.Outcome, td.Err, td.BackRequests, td.Back.Close, td.BackPooled)
	}
}

func postHead(path string, size int) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", path, size)
}

// requestSize is the size of postHead's request with its body.
func requestSize(path string, size int) int { return len(postHead(path, size)) + size }

// countingReader counts what it read: a backend's bytes taken from its
// socket.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// allWritten waits until the proxy has written all of a request of total
// bytes into its socket toward the backend whose connection is c: what
// the backend read of it (*read, counted from the request's start), what
// waits in its receive queue and what the proxy's socket holds
// unacknowledged (sock_diag, both by 4-tuple) add up to it. The kernel
// gives no signal for that: it is looked at every 100 µs, for 5 s at most.
func allWritten(c *net.TCPConn, read *int64, total int64) error {
	backend, proxy := loopback.AddrPort(c.LocalAddr()), loopback.AddrPort(c.RemoteAddr())
	var seen int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		b, okB, errB := sockdiag.Find(backend, proxy)
		p, okP, errP := sockdiag.Find(proxy, backend)
		if errB != nil || errP != nil || !okB || !okP {
			return fmt.Errorf("sock_diag: %v %v (found %v %v)", errB, errP, okB, okP)
		}
		if seen = *read + int64(b.Unread) + int64(p.Unacked); seen == total {
			return nil
		}
	}
	return fmt.Errorf("the proxy wrote %d of %d bytes of the request within 5s", seen, total)
}
