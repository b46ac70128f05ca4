package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// TestHTTP1LargeBodySpliced: a large response body of known length goes
// from the backend's socket straight to the client's (the spliced path),
// byte for byte, never past its end: the next response on the same backend
// connection (pipelined here) arrives whole and in order; the splice pipe
// is gone once the session is.
func TestHTTP1LargeBodySpliced(t *testing.T) {
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/blob" {
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.Write(blob)
			return
		}
		hello(w, r)
	})
	// The proxy's FIN follows the last body into its send queue; the
	// client (with -race, on CPUs a parallel package's loads keep busy)
	// may take longer than testClose's 2 s to read that far and close.
	cl := testClose(policy.TargetProxy, policy.FallbackFIN)
	cl.HalfCloseTimeout = 15 * time.Second
	h := startProxy(t, config.Listener{Close: cl}, http1Backend(o.addr))
	base := loopback.PipeFDs(t)
	t0 := time.Now() // about when the session began: FINOut and FINIn count from then
	got := roundTrips(t, h.addr, "GET /blob HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"+
		"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
	closedAt := time.Since(t0)
	want := "200 " + string(blob)
	for i, w := range []string{want, "200 GET /after 0", want} {
		if got[i] != w {
			t.Errorf("response %d: %d bytes, want %d (%q…)", i+1, len(got[i]), len(w), got[i][:min(len(got[i]), 20)])
		}
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeOK || td.BackRequests != 3 {
		t.Fatalf("record: outcome %s (%v), %d backend requests, want ok and 3; front FIN out at %v, in at %v (-1: none); client closed at %v",
			td.Outcome, td.Err, td.BackRequests, td.Front.FINOut, td.Front.FINIn, closedAt)
	}
	if wantOut := int64(2 * len(blob)); td.Front.BytesOut < wantOut {
		t.Errorf("record: front bytes_out %d, want at least the two bodies (%d)", td.Front.BytesOut, wantOut)
	}
	if n := o.conns.Load(); n != 1 {
		t.Errorf("origin accepted %d connections, want 1: the spliced body left the backend connection reusable", n)
	}
	if n := loopback.PipeFDs(t); n > base {
		t.Errorf("%d pipe descriptors left after the session ended, want none", n-base)
	}
}

// TestHTTP1LargeBodyCutShort: a backend that closes before the length it
// announced leaves the client with a reset, not a response that looks
// whole.
func TestHTTP1LargeBodyCutShort(t *testing.T) {
	blob := bytes.Repeat([]byte("x"), 1<<20)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2*len(blob)))
		w.Write(blob)
		panic(http.ErrAbortHandler) // net/http closes the connection mid-body
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	_, err := get(t, h.addr, false)
	if err == nil || !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
		t.Errorf("client read: %v, want a reset or an unexpected EOF", err)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeBackendReset || td.Front.Close != policy.CloseReset || !strings.Contains(fmt.Sprint(td.Err), "unexpected EOF") {
		t.Errorf("record: outcome %s, front close %s, err %v; want backend_reset, reset, unexpected EOF", td.Outcome, td.Front.Close, td.Err)
	}
}

// TestHTTP1IdleKeepAliveSessionHoldsNoPipe: a keep-alive client that
// fetched a large (spliced) body and then waits does not hold the
// session's splice pipe while it waits: an idle session is its client's
// socket alone. Its next large body makes a pipe again, byte for byte.
func TestHTTP1IdleKeepAliveSessionHoldsNoPipe(t *testing.T) {
	blob := make([]byte, 1<<20+3)
	rand.Read(blob)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.Write(blob)
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	base := loopback.PipeFDs(t)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	fetch := func(last bool) {
		t.Helper()
		req := "GET /blob HTTP/1.1\r\nHost: x\r\n\r\n"
		if last {
			req = "GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("body: %d bytes (%v), want the blob's %d, equal", len(got), err, len(blob))
		}
	}
	fetch(false)
	waitFor(t, 2*time.Second, "the idle session's pipe to close (before idle_timeout ends it)", func() bool { return loopback.PipeFDs(t) <= base })
	select {
	case td := <-h.records:
		t.Fatalf("the session ended while idle: %+v", td)
	default:
	}
	fetch(true)
	c.Close() // the client closes once it has the last body, as the proxy wants (time_wait proxy)
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 2 {
		t.Errorf("record: outcome %s (%v), %d backend requests, want ok and 2", td.Outcome, td.Err, td.BackRequests)
	}
	if n := loopback.PipeFDs(t); n > base {
		t.Errorf("%d pipe descriptors left after the session ended, want none", n-base)
	}
}

// A chunked body sent after Expect: 100-continue goes on as it comes, so
// a malformed chunk is found after the backend got part of it. The
// client gets its 400 at once (a session on a goroutine waited for a
// response the backend, waiting for the rest of the body, never sent,
// until idle_timeout), the record says bad_request, and the backend
// connection, reset, is free for the next client of a pool of one.
func TestHTTP1BadChunkAfterContinueAnswers400(t *testing.T) {
	o := digestOrigin(t)
	be := http1Backend(o.addr)
	be.Pool.MaxConns = 1
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	for _, bad := range []string{"zz\r\nabc\r\n0\r\n\r\n", "3\r\nabcX\r\n0\r\n\r\n"} {
		c := dialClient(t, h.addr, false)
		c.SetDeadline(time.Now().Add(3 * time.Second)) // idle_timeout is 5 s: a 400 comes well before
		br := bufio.NewReader(c)
		const head = "POST /digest/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
		io.WriteString(c, head)
		if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != 100 {
			t.Fatalf("%q: %v %v, want 100 Continue", bad, r, err)
		}
		good := chunk(make([]byte, 10000), 4000)
		good = good[:len(good)-len("0\r\nX-Sum: 1\r\n\r\n")] // the body goes on: no last chunk
		go c.Write(append(good, bad...))
		status, _, closing := readBody(t, br)
		if status != 400 || !closing {
			t.Errorf("%q: client got %d (closing %v), want 400, closing", bad, status, closing)
		}
		c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeBadRequest || !td.Back.Cut {
			t.Errorf("%q: record: outcome %s (%v), back cut %v; want bad_request, the backend connection reset", bad, td.Outcome, td.Err, td.Back.Cut)
		}
		if sent := int64(len(head) + len(good) + len(bad)); td.Front.BytesIn != sent {
			t.Errorf("%q: record: front bytes_in %d, want %d: every byte the client sent, the refused line's too", bad, td.Front.BytesIn, sent)
		}
		if got := roundTrips(t, h.addr, "GET /digest/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); !strings.HasPrefix(got[0], "200 0 ") {
			t.Errorf("%q: the next client got %q, want 200 (through a pool of one)", bad, got)
		}
		h.record(t)
	}
}

// A client that sends part of a request head and then nothing is cut at
// idle_timeout; the record counts what it sent, as it does when the same
// client half-closes instead, with the same error on both relays.
func TestHTTP1PartialHeadCountsItsBytes(t *testing.T) {
	h := startProxy(t, config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(loopback.Serve(t, func(c *net.TCPConn) { c.Close() })))
	partial := "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("a", 300)
	c := dialClient(t, h.addr, false)
	io.WriteString(c, partial)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the client read a byte, want the session's end")
	}
	c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeTimeout || td.Front.BytesIn != int64(len(partial)) || !strings.Contains(fmt.Sprint(td.Err), "idle_timeout") {
		t.Errorf("record: outcome %s (%v), front bytes_in %d; want timeout naming idle_timeout, %d bytes in", td.Outcome, td.Err, td.Front.BytesIn, len(partial))
	}
}

// A client that pipelines two requests and resets while the first
// response comes: the record counts both requests as received, the
// second never served.
func TestHTTP1UnservedPipelinedRequestCountsAsReceived(t *testing.T) {
	blob := make([]byte, 4<<20)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.Write(blob)
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	reqs := "GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
	c := dialClient(t, h.addr, true)
	io.WriteString(c, reqs)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 50<<10)); err != nil {
		t.Fatal(err)
	}
	c.SetLinger(0)
	c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeClientReset || td.Front.BytesIn != int64(len(reqs)) {
		t.Errorf("record: outcome %s (%v), front bytes_in %d; want client_reset, %d (both requests)", td.Outcome, td.Err, td.Front.BytesIn, len(reqs))
	}
	// Both relays word it alike: the response's relay, then the cause.
	if msg := fmt.Sprint(td.Err); !strings.HasPrefix(msg, "relay response: ") || strings.Contains(msg, "copy body") {
		t.Errorf("error %q, want \"relay response: \" and the cause", msg)
	}
}

// With an optional PROXY header, an http1 client that sends nothing has
// idle_timeout from its accept for its first request, the header's wait
// included, on both relays (a goroutine gave it the header's wait and
// then idle_timeout more).
func TestHTTP1FirstHeadDueIdleTimeoutAfterAccept(t *testing.T) {
	ln := ppListener(config.ProxyProtocolOptional, "127.0.0.1/32")
	ln.ProxyProtocolTimeout, ln.IdleTimeout = 400*time.Millisecond, 600*time.Millisecond
	h := startProxy(t, ln, http1Backend(loopback.Serve(t, func(c *net.TCPConn) { c.Close() })))
	c := dialClient(t, h.addr, false)
	start := time.Now()
	c.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the silent client read a byte, want the session's end")
	}
	// idle_timeout and a quarter at most, not the header's wait (400ms) on top
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("the silent client was ended %v after its accept, want about idle_timeout (600ms)", took)
	}
	c.Close()
	h.record(t)
}
