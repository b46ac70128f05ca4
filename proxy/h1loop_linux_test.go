package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// countLoopExchanges counts the exchanges that start on a relay loop
// (h1Loop) from here to the test's end.
func countLoopExchanges(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	loopExchangeHook = func() { n.Add(1) }
	t.Cleanup(func() { loopExchangeHook = nil })
	return &n
}

// framedOrigin answers /length/N, /chunked/N and /close/N with N bytes
// of a pattern, framed by Content-Length, chunked, or by the close.
func framedOrigin(t *testing.T) (*origin, func(n int) []byte) {
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*13 + i>>9)
		}
		return b
	}
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/")
		if len(parts) != 3 {
			hello(w, r)
			return
		}
		n, _ := strconv.Atoi(parts[2])
		b := pattern(n)
		switch parts[1] {
		case "length":
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.Write(b)
		case "chunked":
			for len(b) > 0 { // several chunks, each flushed
				k := min(len(b), 7000)
				w.Write(b[:k])
				w.(http.Flusher).Flush()
				b = b[k:]
			}
		case "close":
			w.Header().Set("Connection", "close")
			w.(http.Flusher).Flush() // no Content-Length: the body ends at the close
			w.Write(b)
		}
	})
	return o, pattern
}

// On the loops (relay = "loop", the default), http1 sessions run their
// exchanges there: bodies framed every way arrive whole (SHA-256), a
// keep-alive client's requests reuse one backend connection, no
// goroutine serves a session between its requests, and each record says
// ok with every request counted.
func TestHTTP1OnTheLoops(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	onLoop := countLoopExchanges(t)
	o, pattern := framedOrigin(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	paths := []string{"/length/0", "/length/5", "/length/300000", "/chunked/1", "/chunked/250000", "/length/20000"}
	const clients = 8
	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range clients {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
	}
	for _, p := range paths {
		n, _ := strconv.Atoi(p[strings.LastIndex(p, "/")+1:])
		want := sha256.Sum256(pattern(n))
		for i, c := range conns {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", p)
			status, b, _ := readBody(t, readers[i])
			if status != 200 || sha256.Sum256(b) != want {
				t.Fatalf("client %d, %s: status %d, %d bytes; want 200 and %d bytes by SHA-256", i, p, status, len(b), n)
			}
		}
		if s := serving(); s != 0 {
			t.Errorf("after %s: %d goroutines serve http1 sessions, want none (they wait on the loops)", p, s)
		}
	}
	// A close-delimited body, last: the client reads it to the proxy's FIN.
	want := sha256.Sum256(pattern(70000))
	fmt.Fprintf(conns[0], "GET /close/70000 HTTP/1.1\r\nHost: x\r\n\r\n")
	if status, b, closing := readBody(t, readers[0]); status != 200 || sha256.Sum256(b) != want || !closing {
		t.Errorf("close-delimited: status %d, %d bytes, closing %v; want 200, 70000 bytes by SHA-256, closing", status, len(b), closing)
	}
	for i, c := range conns {
		if i > 0 {
			c.(*net.TCPConn).CloseWrite()
		}
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Errorf("client %d after its last response: %v, want EOF", i, err)
		}
		c.Close()
	}
	requests := map[int]int{}
	for range clients {
		td := h.record(t)
		requests[td.BackRequests]++
		if td.Outcome != engine.OutcomeOK || td.Front.Cut {
			t.Errorf("record %d: outcome %s (%v), cut %v; want ok, not cut", td.ID, td.Outcome, td.Err, td.Front.Cut)
		}
	}
	if requests[len(paths)] != clients-1 || requests[len(paths)+1] != 1 {
		t.Errorf("records by requests counted: %v, want %d with %d and one with %d", requests, clients-1, len(paths), len(paths)+1)
	}
	if got, want := onLoop.Load(), int64(clients*len(paths)+1); got != want {
		t.Errorf("%d exchanges on the loops, want all %d", got, want)
	}
	if c := o.conns.Load(); c > clients+1 {
		t.Errorf("%d backend connections for %d keep-alive clients, want at most %d (each client's requests reuse one)", c, clients, clients+1)
	}
}

// What the loops do not take goes to a goroutine at a request's start,
// and the session carries on there: a GET on the loop, a POST with a
// body, a GET after it, all answered in order on one connection, one
// record with the three requests.
func TestHTTP1LoopHandsOffARequestWithABody(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	onLoop := countLoopExchanges(t)
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	got := roundTrips(t, h.addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
	if want := []string{"200 GET /a 0", "200 POST /b 5", "200 GET /c 0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers %q, want %q", got, want)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 3 || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), %d requests, cut %v; want ok, 3, not cut", td.Outcome, td.Err, td.BackRequests, td.Front.Cut)
	}
	if n := onLoop.Load(); n != 1 {
		t.Errorf("%d exchanges on the loop, want 1 (the first GET)", n)
	}
}

// A backend that takes the request and never answers: after idle_timeout
// with no byte moving the loop answers 504 and resets the backend
// connection; the record says timeout. A client that resets midway
// through a head is recorded as a client reset.
func TestHTTP1LoopStalledBackendAndRudeClient(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	onLoop := countLoopExchanges(t)
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			<-stall
		}
		hello(w, r)
	})
	h := startProxy(t, config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))

	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
	status, _, closing := readBody(t, bufio.NewReader(c))
	if status != 504 || !closing {
		t.Errorf("stalled backend: status %d, closing %v; want 504 and Connection: close", status, closing)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeTimeout || !td.Back.Cut {
		t.Errorf("record: outcome %s (%v), back cut %v; want timeout, the backend connection reset", td.Outcome, td.Err, td.Back.Cut)
	}

	rude, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(rude, "GET /a HTTP/1.1\r\nHo")
	rude.(*net.TCPConn).SetLinger(0)
	rude.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeClientReset || td.Front.Reason != policy.ReasonPeerReset {
		t.Errorf("client reset midway through a head: outcome %s (%v), front reason %q; want client_reset, peer_reset", td.Outcome, td.Err, td.Front.Reason)
	}
	if n := onLoop.Load(); n != 1 {
		t.Errorf("%d exchanges on the loop, want 1 (the stalled one)", n)
	}
}

// A client that resets while the loop relays a large body to it (the
// body spliced, the client's window small): the record says
// client_reset, the backend connection is reset (its response was cut)
// and its slot freed: with pool.max_conns 1 the next client is served.
func TestHTTP1LoopClientResetsMidResponse(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	onLoop := countLoopExchanges(t)
	o, _ := framedOrigin(t)
	be := http1Backend(o.addr)
	be.Pool.MaxConns = 1
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)

	c := dialClient(t, h.addr, true)
	fmt.Fprintf(c, "GET /length/%d HTTP/1.1\r\nHost: x\r\n\r\n", 12<<20)
	if _, err := io.ReadFull(c, make([]byte, 100<<10)); err != nil { // the response is under way
		t.Fatal(err)
	}
	c.SetLinger(0)
	c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeClientReset || td.Back.Close != policy.CloseReset || !td.Back.Cut {
		t.Errorf("record: outcome %s (%v), back close %s cut %v; want client_reset, the backend connection reset and cut",
			td.Outcome, td.Err, td.Back.Close, td.Back.Cut)
	}
	if got := roundTrips(t, h.addr, "GET /length/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); len(got) != 1 || !strings.HasPrefix(got[0], "200") {
		t.Errorf("the next client: %q, want 200 (the reset connection's slot freed)", got)
	}
	h.record(t)
	if n := onLoop.Load(); n != 2 {
		t.Errorf("%d exchanges on the loop, want 2", n)
	}
}
