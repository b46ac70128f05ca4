package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// origin is a net/http backend that counts the connections it accepted and
// the requests it served.
type origin struct {
	addr     string
	conns    atomic.Int64
	requests atomic.Int64
}

func startOrigin(t *testing.T, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { o.requests.Add(1); h(w, r) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				o.conns.Add(1)
			}
		},
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	o.addr = ln.Addr().String()
	return o
}

func http1Backend(addr string) config.Backend {
	b := defaultBackend(addr)
	b.Protocol = config.ProtocolHTTP1
	return b
}

func hello(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
}

// answerEach is a keep-alive HTTP/1.1 backend that answers each request
// with 200 and the body answer gives for its path, in one write; ended,
// if not nil, hears of each connection's end.
func answerEach(t testing.TB, answer func(path string) []byte, ended chan<- struct{}) string {
	return loopback.Serve(t, func(c *net.TCPConn) {
		if ended != nil {
			defer func() { ended <- struct{}{} }()
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body := answer(req.URL.Path)
			c.Write(append(fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body)), body...))
		}
	})
}

// readBody reads one response from br and returns its status and body.
func readBody(t *testing.T, br *bufio.Reader) (int, []byte, bool) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body, after %d bytes: %v", len(b), err)
	}
	return resp.StatusCode, b, resp.Close
}

// dialClient connects a client to addr with a 10 s deadline, closed when
// the test ends; small gives it a small receive buffer (32 KiB), so that a
// large body backs up into the proxy.
func dialClient(t *testing.T, addr string, small bool) *net.TCPConn {
	t.Helper()
	var d net.Dialer
	if small {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10) })
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrips sends raw requests on one connection and reads as many
// responses with net/http's reader.
func roundTrips(t *testing.T, addr, raw string, n int) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var out []string
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", len(out)+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
	return out
}

func TestHTTP1ReusesBackendAcrossClients(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	for i := range 20 {
		got := roundTrips(t, h.addr, fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", i), 1)
		if want := fmt.Sprintf("200 GET /r%d 0", i); got[0] != want {
			t.Fatalf("got %q want %q", got[0], want)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.BackRequests != 1 || td.Back.Close != policy.ClosePooled || td.Back.TimeWait != policy.SideNone {
			t.Fatalf("record: outcome %s (%v) requests %d back.close %s", td.Outcome, td.Err, td.BackRequests, td.Back.Close)
		}
		if i > 0 && !td.BackReused {
			t.Errorf("connection %d: backend not reused", i)
		}
	}
	if n := o.conns.Load(); n != 1 {
		t.Errorf("origin accepted %d connections for 20 clients, want 1", n)
	}
}

func TestHTTP1PipelinedAnsweredInOrder(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)}, http1Backend(o.addr))
	raw := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	got := roundTrips(t, h.addr, raw, 4)
	want := []string{"200 GET /a 0", "200 POST /b 5", "200 POST /c 3", "200 GET /d 0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q want %q", got, want)
	}
	td := h.record(t)
	if td.BackRequests != 4 || td.Front.TimeWait != policy.SideClient {
		t.Errorf("requests %d front.time_wait %s (fallback %q)", td.BackRequests, td.Front.TimeWait, td.Front.Reason)
	}
}

func TestHTTP1SmugglingRefused(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	} {
		got := roundTrips(t, h.addr, raw, 1)
		if !strings.HasPrefix(got[0], "400 ") {
			t.Errorf("%q: got %q", raw, got[0])
		}
		// Every byte sent came in, the refused head's included.
		if td := h.record(t); td.Outcome != engine.OutcomeBadRequest || td.Front.BytesIn != int64(len(raw)) {
			t.Errorf("outcome %s, front.bytes_in %d; want bad_request, %d", td.Outcome, td.Front.BytesIn, len(raw))
		}
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("%d smuggling requests reached the origin", n)
	}
}

// A pooled connection the origin closed while idle: a GET is retried once
// on another connection and the client never notices.
func TestHTTP1RetriesIdempotentOnDeadPooledConn(t *testing.T) {
	var first atomic.Bool
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			_ = req
			if first.CompareAndSwap(false, true) {
				return // close the first connection once it went back to the pool
			}
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	for range 3 {
		got := roundTrips(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
		if got[0] != "200 ok" {
			t.Fatalf("got %q", got[0])
		}
		if td := h.record(t); td.Outcome != engine.OutcomeOK {
			t.Errorf("outcome %s: %v", td.Outcome, td.Err)
		}
	}
}

// A backend that closes every connection after reading the request: the
// retry on a second pooled connection fails the same way, and the client
// gets a 502 with outcome backend_reset, not a bare EOF recorded as ok.
func TestHTTP1RetryThatFailsAgainAnswers502(t *testing.T) {
	accepted := make(chan struct{}, 64)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		accepted <- struct{}{}
		http.ReadRequest(bufio.NewReader(c))
	})
	b := http1Backend(be)
	b.Pool.Warm = 4
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	for range b.Pool.Warm {
		<-accepted // the warm connections are dialed: both attempts take pooled ones
	}
	got := roundTrips(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
	if !strings.HasPrefix(got[0], "502 ") {
		t.Errorf("got %q, want a 502", got[0])
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeBackendReset || td.Back.Reason != "retried" {
		t.Errorf("outcome %s back.fallback %q (%v), want backend_reset after a retry", td.Outcome, td.Back.Reason, td.Err)
	}
}

// A response delimited by the origin's close can only end with a FIN, even
// when the front target would withhold it.
func TestHTTP1CloseDelimitedEndsWithFIN(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil close")
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)}, http1Backend(be))
	got, err := exchange(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if err != nil || !strings.HasSuffix(got, "until close") {
		t.Fatalf("got %q, %v", got, err)
	}
	td := h.record(t)
	if td.Front.FirstFIN != policy.SideProxy || td.Front.Reason != "close_delimited" || td.Back.FirstFIN != policy.SideBackend {
		t.Errorf("front first_fin %s fallback %q, back first_fin %s", td.Front.FirstFIN, td.Front.Reason, td.Back.FirstFIN)
	}
}

func TestHTTP1UpgradeBecomesTunnel(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br) // echo
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nping")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackReused {
		t.Errorf("outcome %s reused %v", td.Outcome, td.BackReused)
	}
}

func TestHTTP1BackendDownAnswers502(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(dead))
	got := roundTrips(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
	if !strings.HasPrefix(got[0], "502 ") {
		t.Errorf("got %q", got[0])
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDialFailed {
		t.Errorf("outcome %s", td.Outcome)
	}
}

// A chunked body with bad framing is refused: a small one before the
// origin sees a byte; one past the spill limit is cut with a reset, so the
// origin never reads a complete request either way.
func TestHTTP1BadChunkedBodyNeverForwarded(t *testing.T) {
	var complete atomic.Int64
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err == nil {
			complete.Add(1)
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	big := strings.Repeat("a", 1000)
	var longBody strings.Builder
	for range 100 { // 100 KB of good chunks, then a bad one
		fmt.Fprintf(&longBody, "3e8\r\n%s\r\n", big)
	}
	for name, body := range map[string]string{
		"hex prefix":       "0x5\r\nhello\r\n0\r\n\r\n",
		"negative size":    "-5\r\nhello\r\n0\r\n\r\n",
		"data past size":   "3\r\nhello\r\n0\r\n\r\n",
		"bad after 100 KB": longBody.String() + "zz\r\nhello\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			got := roundTrips(t, h.addr, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+body, 1)
			if !strings.HasPrefix(got[0], "400 ") {
				t.Errorf("got %q", got[0])
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeBadRequest {
				t.Errorf("outcome %s: %v", td.Outcome, td.Err)
			}
		})
	}
	if n := complete.Load(); n != 0 {
		t.Errorf("the origin read %d malformed requests whole", n)
	}
	if n := o.requests.Load(); n > 1 {
		t.Errorf("the origin saw %d request heads; only the one past the spill limit may reach it", n)
	}
}

// Small responses whose bodies arrive with their heads go to the client
// head and body in one write: every byte arrives once and in order, and
// the record counts exactly what each side sent.
func TestHTTP1SmallBodiesWithTheirHeads(t *testing.T) {
	resps := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	}
	var sentBack atomic.Int64
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for _, out := range resps {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			n, err := io.WriteString(c, out)
			sentBack.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)}, http1Backend(be))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", len(resps)-1) + "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("client read: %v (after %q)", err, got)
	}
	_ = c.Close() // the client's FIN, after the proxy's
	want := strings.Join(resps[:3], "") + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
	if string(got) != want {
		t.Errorf("client got\n%q\nwant\n%q", got, want)
	}
	td := h.record(t)
	switch {
	case td.Outcome != engine.OutcomeOK:
		t.Errorf("record: outcome %s (%v), want ok", td.Outcome, td.Err)
	case td.Front.BytesOut != int64(len(got)) || td.Front.BytesIn != int64(len(reqs)):
		t.Errorf("record: front bytes_out %d bytes_in %d; the client got %d and sent %d",
			td.Front.BytesOut, td.Front.BytesIn, len(got), len(reqs))
	case td.Back.BytesIn != sentBack.Load() || td.BackRequests != len(resps):
		t.Errorf("record: back bytes_in %d, %d requests; the backend sent %d bytes for %d",
			td.Back.BytesIn, td.BackRequests, sentBack.Load(), len(resps))
	}
}

// A close-delimited response to a client that half-closed after its
// request ends with a FIN whatever the policy: the client reads the body
// to EOF, and an RST, even a safe one after every byte was acknowledged,
// would tell it the body was cut.
func TestHTTP1CloseDelimitedToAHalfClosedClientEndsWithFIN(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nuntil close")
	})
	const head = "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n"
	for _, target := range []policy.Target{policy.TargetNowhere, policy.TargetPeer, policy.TargetProxy} {
		// The client half-closes after its request (its FIN in before
		// the answer ends), or once it has the body (its FIN comes while
		// the proxy withholds its own for it: a peer's FIN event).
		for _, after := range []string{"request", "body"} {
			t.Run(string(target)+"/after_"+after, func(t *testing.T) {
				h := startProxy(t, config.Listener{Close: testClose(target, policy.FallbackReset)}, http1Backend(be))
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				got := make([]byte, 0, 64)
				if after == "body" {
					got = got[:len(head)+len("until close")]
					if _, err := io.ReadFull(c, got); err != nil {
						t.Fatalf("the answer: %v", err)
					}
				}
				c.(*net.TCPConn).CloseWrite()
				rest, err := io.ReadAll(c)
				got = append(got, rest...)
				if err != nil || string(got) != head+"until close" {
					t.Fatalf("the client read %q, then %v; want the whole body, then EOF", got, err)
				}
				if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.Close != policy.CloseFIN || td.Front.Reason != policy.ReasonCloseDelimited {
					t.Errorf("outcome %s, front close %s (reason %s); want ok, fin, close_delimited", td.Outcome, td.Front.Close, td.Front.Reason)
				}
			})
		}
	}
}

// A backend that answers before it has read the body (an early 200, as
// nginx's `return 200` on a POST) and reads the rest: a client still
// sending its body is not cut peer_fin_grace after the response, for
// the grace counts its silence (every pause here is a quarter of it),
// and every byte of the body reaches the backend.
func TestHTTP1EarlyResponseLetsASendingClientFinish(t *testing.T) {
	const part, parts = 1000, 16
	got := make(chan string, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		h := sha256.New()
		io.Copy(h, req.Body)
		got <- hex.EncodeToString(h.Sum(nil))
		io.Copy(io.Discard, br) // until the proxy ends the connection
	})
	ln := config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
	ln.Close.PeerFinGrace = 200 * time.Millisecond
	h := startProxy(t, ln, http1Backend(be))
	c := dialClient(t, h.addr, false)
	body := make([]byte, part*parts)
	for i := range body {
		body[i] = byte(i * 7)
	}
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
	c.Write(body[:part])
	br := bufio.NewReader(c)
	if status, b, _ := readBody(t, br); status != 200 || string(b) != "ok" {
		t.Fatalf("client got %d %q, want 200 ok", status, b)
	}
	for i := 1; i < parts; i++ { // 15 pauses of 50 ms: 3.75 graces in all
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write(body[i*part : (i+1)*part]); err != nil {
			t.Fatalf("part %d of the body: %v", i, err)
		}
	}
	want := sha256.Sum256(body)
	select {
	case sum := <-got:
		if sum != hex.EncodeToString(want[:]) {
			t.Errorf("the backend got a body whose SHA-256 is %s, want %x", sum, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend never got the whole body")
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Back.Cut || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), cut back %v front %v; want ok, nothing cut", td.Outcome, td.Err, td.Back.Cut, td.Front.Cut)
	}
}

// A 101 to a request that asked for no upgrade is a bad response on
// either relay: a 502, not a tunnel carrying the backend's raw bytes.
func TestHTTP1UnaskedSwitchingProtocolsIsABadResponse(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\n\r\nTUNNEL-BYTES")
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 502 ") || strings.Contains(string(got), "TUNNEL-BYTES") {
		t.Errorf("client got %q, want a 502 and none of the backend's bytes", got)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeBadResponse {
		t.Errorf("outcome %s (%v), want bad_response", td.Outcome, td.Err)
	}
}

// A malformed chunk in a response is the backend's bad response, not its
// reset (it neither reset nor closed): bad_response on either relay,
// whether the client got a 502 (nothing of the response had gone) or
// the response cut after what went before (an RST, never a clean end),
// and the malformed line never reaches the client.
func TestHTTP1MalformedResponseChunkIsABadResponse(t *testing.T) {
	good := strings.Repeat("qqqqqqqqqqqqqqqq", 7*1024) // 112 KiB: past what a loop holds with the head
	for _, tc := range []struct{ name, body string }{
		{"at once", "zz\r\nhello\r\n0\r\n\r\n"},
		{"after 1 KiB", fmt.Sprintf("400\r\n%s\r\nzz\r\nhello\r\n0\r\n\r\n", good[:1024])},
		{"after 112 KiB", fmt.Sprintf("%x\r\n%s\r\nzz\r\nhello\r\n0\r\n\r\n", len(good), good)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			be := loopback.Serve(t, func(c *net.TCPConn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.body)
				<-hold // neither reset nor close
			})
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
			c := dialClient(t, h.addr, false)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			got, err := io.ReadAll(c)
			switch {
			case strings.HasPrefix(string(got), "HTTP/1.1 502 "):
			case !strings.HasPrefix(string(got), "HTTP/1.1 200 ") || !errors.Is(err, syscall.ECONNRESET):
				t.Errorf("client got %d bytes (%.20q), then %v; want a 502, or the response cut by an RST", len(got), got, err)
			case strings.Contains(string(got), "zz"):
				t.Errorf("the malformed chunk line reached the client (%d bytes)", len(got))
			}
			if td := h.record(t); td.Outcome != engine.OutcomeBadResponse {
				t.Errorf("outcome %s (%v), want bad_response", td.Outcome, td.Err)
			}
		})
	}
}

// A client that leaves inside a chunked body the proxy still holds (none
// of the request went to the backend): every byte it sent counts as
// received, and the pooled backend connection, which got nothing, is not
// cut: the next request is served on it.
func TestHTTP1ClientLeavingAHeldBodyCutsNoBackend(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	if got := roundTrips(t, h.addr, "GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); !strings.HasPrefix(got[0], "200 ") {
		t.Fatalf("first request: %q", got)
	}
	h.record(t)
	c := dialClient(t, h.addr, false)
	sent := "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc"
	io.WriteString(c, sent)
	c.CloseWrite()
	io.ReadAll(c)
	td := h.record(t)
	if td.Outcome != engine.OutcomeClientAborted || td.Front.BytesIn != int64(len(sent)) || td.Back.Cut {
		t.Errorf("record: outcome %s, front.bytes_in %d, back.cut %v; want client_aborted, %d, false",
			td.Outcome, td.Front.BytesIn, td.Back.Cut, len(sent))
	}
	if got := roundTrips(t, h.addr, "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); !strings.HasPrefix(got[0], "200 ") {
		t.Fatalf("next request: %q", got)
	}
	h.record(t)
	if n := o.conns.Load(); n != 1 {
		t.Errorf("the origin accepted %d connections, want 1: the one that got nothing was cut", n)
	}
}

// back.tries counts the servers tried for the last request's connection,
// not the requests: five on one keep-alive connection, one server, 1.
func TestHTTP1TriesCountServersNotRequests(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	got := roundTrips(t, h.addr, strings.Repeat(req, 4)+"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
	if len(got) != 5 {
		t.Fatalf("%d responses, want 5", len(got))
	}
	if td := h.record(t); td.BackTries != 1 || td.BackRequests != 5 {
		t.Errorf("back.tries %d, back.requests %d; want 1 and 5", td.BackTries, td.BackRequests)
	}
}

// An early response, then a backend that stops taking the body for a
// while (its buffers full): the client's bytes wait on the proxy, which
// is the proxy's backpressure, not the client's silence. The client is
// not cut peer_fin_grace after the response (the backend pauses five
// graces), and once the backend reads again every byte reaches it; one
// that never reads again ends the session at idle_timeout.
func TestHTTP1EarlyResponseWaitsOnABackendNotReading(t *testing.T) {
	const size = 32 << 20 // more than every buffer on the way holds
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 13)
	}
	for _, resumes := range []bool{true, false} {
		t.Run(fmt.Sprintf("resumes=%v", resumes), func(t *testing.T) {
			got := make(chan string, 1)
			paused := make(chan struct{})
			be := loopback.Serve(t, func(c *net.TCPConn) {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				<-paused
				if !resumes {
					io.Copy(io.Discard, br) // until the proxy ends the connection
					return
				}
				h := sha256.New()
				io.Copy(h, req.Body)
				got <- hex.EncodeToString(h.Sum(nil))
				io.Copy(io.Discard, br)
			})
			ln := config.Listener{IdleTimeout: 3 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
			ln.Close.PeerFinGrace = 200 * time.Millisecond
			h := startProxy(t, ln, http1Backend(be))
			c := dialClient(t, h.addr, false)
			sent := make(chan error, 1)
			go func() {
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
				_, err := c.Write(body)
				sent <- err
			}()
			br := bufio.NewReader(c)
			if status, b, _ := readBody(t, br); status != 200 || string(b) != "ok" {
				t.Fatalf("client got %d %q, want 200 ok", status, b)
			}
			start := time.Now()
			if resumes {
				time.Sleep(5 * ln.Close.PeerFinGrace) // the backend's pause: the load's shape
				close(paused)
				if err := <-sent; err != nil {
					t.Fatalf("the client's body: %v", err)
				}
				want := sha256.Sum256(body)
				if sum := <-got; sum != hex.EncodeToString(want[:]) {
					t.Errorf("the backend got a body whose SHA-256 is %s, want %x", sum, want)
				}
				c.Close()
				if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Back.Cut || td.Front.Cut {
					t.Errorf("record: outcome %s (%v), cut back %v front %v; want ok, nothing cut", td.Outcome, td.Err, td.Back.Cut, td.Front.Cut)
				}
				return
			}
			defer close(paused)
			td := h.record(t)
			took := time.Since(start)
			if took < ln.IdleTimeout-ln.Close.PeerFinGrace {
				t.Errorf("the session ended %v after the response, want idle_timeout (%v): the backend's backpressure was taken for the client's silence", took, ln.IdleTimeout)
			}
			if !td.Back.Cut {
				t.Errorf("record: back leg not cut; want cut (it got part of a request): %+v", td.Back)
			}
			if td.Outcome != engine.OutcomeTimeout || td.Front.Reason != policy.ReasonCut {
				t.Errorf("record: outcome %s (%v), front reason %s; want timeout (the exchange stalled), cut", td.Outcome, td.Err, td.Front.Reason)
			}
			if err := <-sent; err == nil {
				t.Errorf("the client's %d bytes all went through a backend that read none", size)
			}
		})
	}
}

// tunnelData is n bytes of a pattern that shows a lost or moved stretch.
func tunnelData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>8)
	}
	return b
}

// sendThenHalfClose writes b to c, then half-closes it; the channel
// gives the first error.
func sendThenHalfClose(c *net.TCPConn, b []byte) <-chan error {
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	return sent
}

// hashRest reads br to its end: how many bytes, their SHA-256.
func hashRest(br *bufio.Reader) (int64, [32]byte, error) {
	hs := sha256.New()
	n, err := io.Copy(hs, br)
	return n, [32]byte(hs.Sum(nil)), err
}

// expect101 reads a response from br and fails t unless it is a 101.
func expect101(t *testing.T, br *bufio.Reader, what string) {
	t.Helper()
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("%s: %v %v, want 101", what, resp, err)
	}
}

// tunnelEchoed reads the tunnel's echo from br to its end, waits for the
// client's bytes to be sent (sent), and closes c.
func tunnelEchoed(t *testing.T, c *net.TCPConn, br *bufio.Reader, sent <-chan error, what string) (int64, [32]byte, error) {
	t.Helper()
	n, sum, err := hashRest(br)
	if err := <-sent; err != nil {
		t.Fatalf("%s: sending the tunnel's bytes: %v", what, err)
	}
	c.Close()
	return n, sum, err
}

// upgradeEchoBackend answers an upgrade 101 and echoes what follows the
// request's head (its body, then the tunnel's bytes) until EOF.
func upgradeEchoBackend(t testing.TB) string {
	return loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br) // the body, then the tunnel's bytes
		c.CloseWrite()
	})
}

// An upgrade whose request has a body: the backend answers 101 before
// reading it, and the client's tunnel bytes follow the body at once. The
// body's copy may read them with it (one buffer): the tunnel starts once
// the copy is done and relays them first. The backend echoes the body
// and the tunnel whole (SHA-256), every session of a run of them (the
// copy's timing varies: one in tens lost 4 KiB before).
func TestHTTP1UpgradeWithABodyLosesNoTunnelByte(t *testing.T) {
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(upgradeEchoBackend(t)))
	data := tunnelData(256 << 10)
	want := sha256.Sum256(append([]byte("BODY"), data...))
	for i := range 30 {
		c := dialClient(t, h.addr, false)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 4\r\n\r\nBODY")
		what := fmt.Sprintf("session %d", i)
		br := bufio.NewReader(c)
		expect101(t, br, what)
		n, sum, err := tunnelEchoed(t, c, br, sendThenHalfClose(c, data), what)
		td := h.record(t)
		if err != nil || sum != want {
			t.Fatalf("session %d: the echo had %d bytes (%v), want %d with the body first (SHA-256); record %s (%v)",
				i, n, err, 4+len(data), td.Outcome, td.Err)
		}
		if td.Outcome != engine.OutcomeOK {
			t.Errorf("session %d: record %s (%v), want ok", i, td.Outcome, td.Err)
		}
	}
}

// The same with the tunnel's first bytes sent behind the body in the same
// write, before the 101: the loop reads them with the request and hands
// the session to a goroutine with them. Every byte arrives, in order; on
// the loops 8-12 KiB from the middle were lost (what the hand-off's
// reader had not yet buffered when the tunnel began), under an ok record.
func TestHTTP1UpgradeWithEarlyTunnelBytesLosesNone(t *testing.T) {
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(upgradeEchoBackend(t)))
	for _, size := range []int{8000, 20000, 100000} {
		data := tunnelData(size)
		want := sha256.Sum256(append([]byte("0123456789"), data...))
		c := dialClient(t, h.addr, false)
		sent := sendThenHalfClose(c, append([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 10\r\n\r\n0123456789"), data...))
		what := fmt.Sprintf("%d bytes", size)
		br := bufio.NewReader(c)
		expect101(t, br, what)
		n, sum, err := tunnelEchoed(t, c, br, sent, what)
		td := h.record(t)
		if err != nil || sum != want {
			t.Errorf("%d tunnel bytes behind the body: the echo had %d bytes (%v), want %d in order (SHA-256); record %s front.bytes_in %d",
				size, n, err, 10+size, td.Outcome, td.Front.BytesIn)
		}
	}
}

// A tunnel on a backend connection an earlier request of the session used
// and gave back: the record's back leg tells of the tunnel's close (FINs,
// TIME-WAIT where the kernel has it), not "pooled" and no TIME-WAIT, as
// the earlier exchange left it.
func TestHTTP1TunnelAfterARequestRecordsItsClose(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("Upgrade") == "" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			io.Copy(c, br)
			c.CloseWrite()
			io.Copy(io.Discard, br)
			return
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first request: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("the upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "hello")
	c.CloseWrite()
	if got, err := io.ReadAll(br); err != nil || string(got) != "hello" {
		t.Fatalf("the tunnel's echo: %q, %v", got, err)
	}
	c.Close()
	td := h.record(t)
	if b := td.Back; b.Close != policy.CloseFIN || b.TimeWait == policy.SideNone || td.BackRequests != 2 {
		t.Errorf("back close %s time_wait %s first_fin %s requests %d; want the tunnel's FIN exchange and its TIME-WAIT, 2 requests",
			b.Close, b.TimeWait, b.FirstFIN, td.BackRequests)
	}
}

// A tunnel whose backend spoke last when the client half-closes: the
// client's FIN reaches the backend (http1 mode takes no bet, and a
// tunnel does not say where an answer ends), and what the backend sends
// on EOF reaches the client before the end, with back fallback "reset"
// and with target nowhere too, whose grace would otherwise end by a safe
// reset once the client had read everything it was sent.
func TestHTTP1TunnelPassesTheClientsHalfClose(t *testing.T) {
	for _, target := range []policy.Target{policy.TargetProxy, policy.TargetNowhere} {
		t.Run(string(target), func(t *testing.T) { tunnelPassesHalfClose(t, target) })
	}
}

func tunnelPassesHalfClose(t *testing.T, target policy.Target) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br) // echo until the client's FIN
		io.WriteString(c, "BYE")
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	back := http1Backend(be)
	back.Close = testClose(target, policy.FallbackReset)
	h := startProxy(t, config.Listener{Close: testClose(target, policy.FallbackReset)}, back)
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q %v", buf, err)
	}
	// The backend spoke last; the client now half-closes after a pause
	// longer than the grace (the load's shape).
	time.Sleep(400 * time.Millisecond)
	c.CloseWrite()
	rest, err := io.ReadAll(br)
	c.Close()
	td := h.record(t)
	// The end: EOF, or with target nowhere the front leg's safe reset
	// once the client had every byte.
	safeReset := errors.Is(err, syscall.ECONNRESET) && target == policy.TargetNowhere && td.Front.Close == policy.CloseReset && !td.Front.Cut
	if err != nil && !safeReset || string(rest) != "BYE" {
		t.Errorf("after its half-close the client got %q (%v), want the backend's BYE, then its stream's end", rest, err)
	}
	if td.Outcome != engine.OutcomeOK || td.Back.Close == policy.CloseReset {
		t.Errorf("record: outcome %s (%v), back close %s reason %s; want ok, not reset", td.Outcome, td.Err, td.Back.Close, td.Back.Reason)
	}
}

// A close-delimited response (no length: only the FIN ends it) with a
// request pipelined behind its request: the second can no longer be
// served, but the first response must end as it can only end, by a FIN,
// before the reset that tells the client its request was lost. The
// client reads the whole body, then EOF (not ECONNRESET).
func TestHTTP1CloseDelimitedResponseEndsWithFINBeforePipelinedLoss(t *testing.T) {
	body := strings.Repeat("z", 5000)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"+body)
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != body {
		t.Errorf("close-delimited body: %d of %d bytes, then %v; want all, then EOF", len(b), len(body), err)
	}
	c.Close()
	td := h.record(t)
	if td.Front.FINOut < 0 || td.Outcome != engine.OutcomeLateData {
		t.Errorf("record: front fin_out %v close %s, outcome %s (%v); want the proxy's FIN, then late_data", td.Front.FINOut, td.Front.Close, td.Outcome, td.Err)
	}
}

// A client that pipelines a request behind an answer that ends the
// connection, then pauses reading for longer than drain_timeout, gets
// that answer whole once it reads on (within idle_timeout), then its
// stream's end: the reset that tells it its second request was lost,
// unless it closed first (the record says late_data, nothing cut). The
// reset went once drain_timeout passed with no progress, and destroyed
// what the paused client had not taken yet (129 of 200 KB in a review;
// nginx alone keeps such answers whole).
func TestHTTP1PausedReaderBehindAClosingAnswerGetsItWhole(t *testing.T) {
	body := strings.Repeat("p", 1<<20) // more than the client's window, less than the proxy's buffer takes
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	})
	front := testClose(policy.TargetProxy, policy.FallbackFIN)
	front.DrainTimeout = 200 * time.Millisecond
	h := startProxy(t, config.Listener{Close: front}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	_ = c.SetReadBuffer(32 << 10)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(5 * front.DrainTimeout) // the peer under test: a reader that pauses
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after its pause the client got %v, %v; want the first answer", resp, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) != len(body) {
		t.Errorf("the paused client read %d of %d bytes of the answer, then %v; want every byte", len(b), len(body), err)
	}
	// Then its stream's end: EOF, or the reset when it came before the
	// read (it follows the client's ACK of the proxy's FIN).
	if rest, err := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("after the answer the client got %q, then %v; want nothing more", rest, err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeLateData || td.Front.Reason != policy.ReasonLateData || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), front close %s reason %s cut %v; want late_data, nothing cut", td.Outcome, td.Err, td.Front.Close, td.Front.Reason, td.Front.Cut)
	}
}

// A client that reads a large answer slowly and steadily, for longer than
// idle_timeout in all, gets every byte: bytes it takes out of the proxy's
// socket moved, although the proxy, its socket megabytes full, writes
// none for longer than idle_timeout (the socket is writable again only
// once about half drained). On the loops such a reader was cut at
// idle_timeout, "no byte moved", 3 of 4 MB unread.
func TestHTTP1SlowReaderOfALargeAnswerIsNotIdle(t *testing.T) {
	body := strings.Repeat("s", 4<<20) // megabytes queued in the proxy's socket
	sum := sha256.Sum256([]byte(body))
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	})
	const idle = 500 * time.Millisecond
	h := startProxy(t, config.Listener{IdleTimeout: idle, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, true)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	start := time.Now()
	buf := make([]byte, 16<<10)
	h256 := sha256.New()
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		h256.Write(buf[:k])
		n += int64(k)
		if err != nil {
			if err != io.EOF {
				t.Errorf("after %d of %d bytes (%v): %v", n, len(body), time.Since(start), err)
			}
			break
		}
		if time.Since(start) < 3*idle {
			time.Sleep(50 * time.Millisecond) // the peer under test: slow and steady (about 300 KB/s), then at full speed
		}
	}
	if n != int64(len(body)) || [32]byte(h256.Sum(nil)) != sum {
		t.Errorf("the slow reader got %d of %d bytes (SHA-256 equal: %v) in %v", n, len(body), [32]byte(h256.Sum(nil)) == sum, time.Since(start))
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), front cut %v; want ok, nothing cut", td.Outcome, td.Err, td.Front.Cut)
	}
	// A client that stops reading altogether is still cut at about
	// idle_timeout: its queue no longer shrinks.
	c = dialClient(t, h.addr, true)
	io.WriteString(c, "GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	td := h.record(t) // the client reads nothing more
	if took := time.Since(start); td.Outcome != engine.OutcomeTimeout || !td.Front.Cut || took > 4*idle {
		t.Errorf("a client that stopped reading: record %s (%v), front cut %v after %v; want timeout, cut, within about idle_timeout %v", td.Outcome, td.Err, td.Front.Cut, took, idle)
	}
}

// Front time_wait "nowhere" in http1 mode: a response that closes the
// connection (HTTP/1.0 here, framed) may be read to EOF, as ab and
// HTTP/1.0 clients do; such a client, silent after its request, gets
// the FIN (rule 1), never a reset after the body.
func TestHTTP1NowhereGivesAnEOFReaderItsFIN(t *testing.T) {
	o := startOrigin(t, hello)
	front := testClose(policy.TargetNowhere, policy.FallbackReset)
	h := startProxy(t, config.Listener{Close: front}, http1Backend(o.addr))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET /x HTTP/1.0\r\n\r\n")
	got, err := io.ReadAll(c)
	if err != nil || !strings.HasSuffix(string(got), "GET /x 0") {
		t.Fatalf("the client reading to EOF got %q, then %v; want the response, then EOF", got, err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.FINOut < 0 {
		t.Errorf("record: outcome %s (%v), front close %s reason %s fin_out %v; want ok, the proxy's FIN", td.Outcome, td.Err, td.Front.Close, td.Front.Reason, td.Front.FINOut)
	}
}

// Front time_wait "nowhere", a response that closes the connection, and
// a client that closes once it has it (as curl does): its FIN comes
// first, so it was not reading to EOF, and the leg ends by a safe reset
// with no TIME-WAIT anywhere, not by a FIN that leaves one on the client.
func TestHTTP1NowhereResetsAClientThatClosesFirst(t *testing.T) {
	o := startOrigin(t, hello)
	front := testClose(policy.TargetNowhere, policy.FallbackReset)
	front.PeerFinGrace = 2 * time.Second // the client's FIN comes well within
	h := startProxy(t, config.Listener{Close: front}, http1Backend(o.addr))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if status, b, closing := readBody(t, bufio.NewReader(c)); status != 200 || string(b) != "GET /x 0" || !closing {
		t.Fatalf("%d %q closing %v", status, b, closing)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.TimeWait != policy.SideNone || td.Front.Close != policy.CloseReset || td.Front.FINIn < 0 {
		t.Errorf("record: outcome %s, front first_fin %s close %s time_wait %s reason %s; want ok, the client's FIN, a safe reset: no TIME-WAIT",
			td.Outcome, td.Front.FirstFIN, td.Front.Close, td.Front.TimeWait, td.Front.Reason)
	}
}

// An early response to an upload (the backend answers before it has the
// body), then a client that half-closes with its body not whole: it
// left mid-request, on either relay: client_aborted, both legs cut.
func TestHTTP1ClientLeavingMidBodyAfterAnEarlyResponseIsAborted(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br) // the body as it comes, until the proxy ends it
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
	c.Write(make([]byte, 100000))
	if status, b, _ := readBody(t, bufio.NewReader(c)); status != 200 || string(b) != "ok" {
		t.Fatalf("%d %q", status, b)
	}
	c.CloseWrite() // 900 kB short
	io.Copy(io.Discard, c)
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeClientAborted || !td.Back.Cut {
		t.Errorf("record: outcome %s (%v), back cut %v, front cut %v; want client_aborted, the backend's request cut", td.Outcome, td.Err, td.Back.Cut, td.Front.Cut)
	}
}

// A backend that resets while the request's body still flows to it, and
// before any response byte: the client gets a 502 and the record says
// backend_reset, on both relays. On goroutines the failed write to the
// backend was taken for the client leaving: a bare reset to the client,
// recorded client_aborted (and no passive ejection).
func TestHTTP1BackendResetDuringBodyAnswers502(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			c.Close()
			return
		}
		c.SetLinger(0) // the head is in: reset while the body comes
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	body := strings.Repeat("x", 4<<20)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		io.WriteString(c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)))
		io.WriteString(c, body) // fails once the proxy resets: the answer is what counts
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the client got no response: %v", err)
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	// The error names the reset (or the write it failed), not a timeout
	// nor the EOF a read met after the body's write took the reset.
	if td := h.record(t); td.Outcome != engine.OutcomeBackendReset || strings.Contains(fmt.Sprint(td.Err), "timeout") ||
		strings.HasSuffix(fmt.Sprint(td.Err), "EOF") {
		t.Errorf("outcome %s (%v), want backend_reset, the reset's error", td.Outcome, td.Err)
	}
}

// A backend that answers early (413) and resets while the body still
// comes: the answer reached the proxy before the reset, so the client
// gets it whole, not a 502 (the body write's error does not cut the
// answer's read short). Rounds, as the write's error and the answer
// race.
func TestHTTP1EarlyAnswerBeforeABackendResetIsDelivered(t *testing.T) {
	const answer = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large"
	be := loopback.Serve(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, answer)
		}
		c.SetLinger(0) // reset while the body comes
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	body := strings.Repeat("x", 4<<20)
	const rounds = 48
	bad := 0
	for i := range rounds {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			io.WriteString(c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)))
			io.WriteString(c, body) // fails once the proxy closes: the answer is what counts
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(resp.Body)
		}
		c.Close()
		<-wrote
		td := h.record(t)
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || string(got) != "too large" {
			if bad++; bad <= 3 {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("round %d: the client got %d %q (%v), want the backend's 413 \"too large\"; record outcome %s (%v)",
					i, status, got, err, td.Outcome, td.Err)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d rounds lost the backend's answer", bad, rounds)
	}
}

// back.reason "retried" is about the request that was retried: a later
// request of the session that fails without a retry does not carry it
// (it read as a retry that failed).
func TestHTTP1RetriedNoteStaysWithItsRequest(t *testing.T) {
	accepted := make(chan struct{}, 64)
	var failedOnce atomic.Bool
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		accepted <- struct{}{}
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || req.URL.Path == "/fail" {
				return // closed without an answer
			}
			if req.URL.Path == "/retry-me" && failedOnce.CompareAndSwap(false, true) {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	b := http1Backend(be)
	b.Pool.Warm = 2
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	for range b.Pool.Warm {
		<-accepted // the first request takes a pooled connection: a retry is allowed
	}
	got := roundTrips(t, h.addr, "GET /retry-me HTTP/1.1\r\nHost: x\r\n\r\nPOST /fail HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 2)
	if got[0] != "200 ok" || !strings.HasPrefix(got[1], "502 ") {
		t.Fatalf("got %q, want 200 ok after a retry, then a 502", got)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeBackendReset || td.Back.Reason == policy.ReasonRetried {
		t.Errorf("outcome %s back.reason %q (%v), want backend_reset without the earlier request's retry", td.Outcome, td.Back.Reason, td.Err)
	}
}

// A request with an empty body (Content-Length: 0) answered at once is
// answered to the whole request: the client connection is kept and the
// backend connection reused, on either relay.
func TestHTTP1EmptyBodyAnswerIsNotEarly(t *testing.T) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	c := dialClient(t, h.addr, false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
		if status, _, closing := readBody(t, br); status != 200 || closing {
			t.Fatalf("request %d: %d, closing %v; want 200, kept", i, status, closing)
		}
	}
	c.Close()
	if td := h.record(t); td.BackRequests != 2 || o.conns.Load() != 1 {
		t.Errorf("record: %d backend requests over %d backend connections; want 2 over 1", td.BackRequests, o.conns.Load())
	}
}
