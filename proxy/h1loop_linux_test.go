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

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// loopExchanges counts the exchanges that start on a relay loop (h1Loop).
type loopExchanges struct{ n atomic.Int64 }

// countLoopExchanges counts the exchanges that start on a relay loop
// from here to the test's end.
func countLoopExchanges(t *testing.T) *loopExchanges {
	l := &loopExchanges{}
	loopExchangeHook = func() { l.n.Add(1) }
	t.Cleanup(func() { loopExchangeHook = nil })
	return l
}

// expect fails t unless want exchanges started on the loops (which ones,
// says which); with relay = "goroutines" none do, and nothing is checked.
func (l *loopExchanges) expect(t *testing.T, want int64, which string) {
	t.Helper()
	if got := l.n.Load(); testRelay == "loop" && got != want {
		t.Errorf("%d exchanges on the loops, want %d (%s)", got, want, which)
	}
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
	onLoop.expect(t, int64(clients*len(paths)+1), "all")
	if c := o.conns.Load(); c > clients+1 {
		t.Errorf("%d backend connections for %d keep-alive clients, want at most %d (each client's requests reuse one)", c, clients, clients+1)
	}
}

// A short answer to a request that closes the connection reaches the
// client with the proxy's FIN in one segment: the client's kernel counts
// three received, the SYN-ACK, the ACK of its request and the answer
// with the FIN, where the answer then a FIN would be four. A longer one
// goes at once and its FIN after it (engine's heldMax: the client would
// acknowledge it alone, and its FIN could then come before the proxy's
// reading after its own, leaving the order unproved). Each answer is
// whole (SHA-256), and its record says ok, the proxy's FIN first.
func TestHTTP1LoopAnswerRidesTheFIN(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	o, pattern := framedOrigin(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	for _, want := range []struct{ n, segs int }{{5, 3}, {3000, 4}} {
		n := want.n
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /length/%d HTTP/1.0\r\nHost: x\r\n\r\n", n)
		status, b, closing := readBody(t, bufio.NewReader(c))
		if status != 200 || sha256.Sum256(b) != sha256.Sum256(pattern(n)) || !closing {
			t.Fatalf("status %d, %d bytes, closing %v; want 200, %d bytes by SHA-256, closing", status, len(b), closing, n)
		}
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("after the answer: %v; want EOF", err)
		}
		rc, _ := c.(*net.TCPConn).SyscallConn()
		var info *unix.TCPInfo
		_ = rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if err != nil {
			t.Fatal(err)
		}
		if int(info.Segs_in) != want.segs {
			t.Errorf("%d-byte answer: the client received %d segments; want %d", n, info.Segs_in, want.segs)
		}
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.FirstFIN != policy.SideProxy {
			t.Errorf("record %s (%v), front first_fin %s; want ok, proxy", td.Outcome, td.Err, td.Front.FirstFIN)
		}
	}
}

// What the loops do not take goes to a goroutine at a request's start,
// and the session carries on there: a GET on the loop, an upgrade with
// a body (the backend declines the upgrade), a GET after it, all answered
// in order on one connection, one record with the three requests.
func TestHTTP1LoopHandsOffARequestWithABody(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": no loops`)
	}
	onLoop := countLoopExchanges(t)
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	got := roundTrips(t, h.addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
	if want := []string{"200 GET /a 0", "200 POST /b 5", "200 GET /c 0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers %q, want %q", got, want)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 3 || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), %d requests, cut %v; want ok, 3, not cut", td.Outcome, td.Err, td.BackRequests, td.Front.Cut)
	}
	onLoop.expect(t, 1, "the first GET")
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
	onLoop.expect(t, 1, "the stalled one")
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
	onLoop.expect(t, 2, "both")
}

// digestOrigin answers a request with its body's length and SHA-256 (hex),
// after reading all of it; /echo/ answers with the body itself, as it
// reads it.
func digestOrigin(t *testing.T) *origin {
	return startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/echo/") {
			http.NewResponseController(w).EnableFullDuplex()
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
			io.Copy(w, r.Body)
			return
		}
		d := sha256.New()
		n, _ := io.Copy(d, r.Body)
		fmt.Fprintf(w, "%d %x", n, d.Sum(nil))
	})
}

// Request bodies of known length go to the backend from the loop as they
// come, whole (SHA-256 at the origin), on keep-alive sessions that mix
// them with GETs: a client that sends each request in one write, one
// that trickles its body in small writes, one that half-closes after its
// last body, and one whose body the origin echoes while it is still
// being sent (up and down at once). Every exchange runs on the loop; the
// records count every byte. An echo's answer can begin while its body is
// still on its way, and then says Connection: close (the proxy cannot
// tell an echo from a backend that stopped reading): that client goes on
// on a new connection, as clients do; it kept sending on the closed one,
// and its next request was lost (1 run in about 20).
func TestHTTP1LoopRequestBodies(t *testing.T) {
	onLoop := countLoopExchanges(t)
	o := digestOrigin(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i>>10)
		}
		return b
	}
	sizes := []int{0, 5, 16000, 300000, 3 << 20}
	kinds := []string{"whole", "trickle", "half-close", "echo", "expect", "chunked", "expect-chunked"}
	requests := 0
	for _, kind := range kinds {
		c := dialClient(t, h.addr, false)
		br := bufio.NewReader(c)
		var up int64 // what this connection carried from the client
		reqs := 0    // and its requests
		ended := func() {
			t.Helper()
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.Front.Cut || td.Back.Cut || td.BackRequests != reqs {
				t.Errorf("%s: record: outcome %s (%v), cut %v/%v, %d requests; want ok, nothing cut, %d",
					kind, td.Outcome, td.Err, td.Front.Cut, td.Back.Cut, td.BackRequests, reqs)
			}
			if td.Front.BytesIn != up {
				t.Errorf("%s: record: %d bytes in from the client, want %d", kind, td.Front.BytesIn, up)
			}
		}
		for i, n := range sizes {
			b := body(n)
			path := "/digest/" + kind
			if kind == "echo" {
				path = "/echo/" + kind
			}
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", path, n)
			if strings.HasPrefix(kind, "expect") && n > 0 {
				head = strings.Replace(head, "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1)
			}
			wire := b // the body as it goes on the wire
			if strings.HasSuffix(kind, "chunked") {
				head = strings.Replace(head, fmt.Sprintf("Content-Length: %d", n), "Transfer-Encoding: chunked", 1)
				wire = chunk(b, 7000)
			}
			up += int64(len(head) + len(wire))
			if strings.Contains(head, "Expect") { // the head alone, the body after the 100 Continue
				io.WriteString(c, head)
				if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != 100 {
					t.Fatalf("expect, %d bytes: %v %v, want 100 Continue", n, r, err)
				}
				head = ""
			}
			sent := make(chan error, 1)
			go func() {
				var err error
				switch kind {
				case "trickle":
					if _, err = io.WriteString(c, head); err == nil {
						for p := b; len(p) > 0 && err == nil; p = p[min(len(p), 999):] {
							_, err = c.Write(p[:min(len(p), 999)])
						}
					}
				default:
					_, err = c.Write(append([]byte(head), wire...))
				}
				if err == nil && kind == "half-close" && i == len(sizes)-1 {
					err = c.CloseWrite()
				}
				sent <- err
			}()
			status, got, closing := readBody(t, br)
			if err := <-sent; err != nil {
				t.Fatalf("%s, %d bytes: send: %v", kind, n, err)
			}
			want := fmt.Sprintf("%d %x", n, sha256.Sum256(b))
			if kind == "echo" {
				if status != 200 || sha256.Sum256(got) != sha256.Sum256(b) {
					t.Errorf("%s, %d bytes: status %d, %d bytes back; want 200 and the body by SHA-256", kind, n, status, len(got))
				}
			} else if status != 200 || string(got) != want {
				t.Errorf("%s, %d bytes: status %d, %q; want 200, %q", kind, n, status, got, want)
			}
			requests++
			reqs++
			if closing && i < len(sizes)-1 {
				if kind != "echo" {
					t.Errorf("%s, %d bytes: the answer said Connection: close", kind, n)
				}
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("%s after an answer that closes: %v, want EOF", kind, err)
				}
				c.Close()
				ended()
				c = dialClient(t, h.addr, false)
				br, up, reqs = bufio.NewReader(c), 0, 0
			}
			if i == 1 { // a GET between bodies
				head := "GET /digest/get HTTP/1.1\r\nHost: x\r\n\r\n"
				io.WriteString(c, head)
				up += int64(len(head))
				if status, got, _ := readBody(t, br); status != 200 || !strings.HasPrefix(string(got), "0 ") {
					t.Errorf("%s: GET between bodies: %d %q", kind, status, got)
				}
				requests++
				reqs++
			}
		}
		if kind != "half-close" {
			c.CloseWrite()
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s after its last response: %v, want EOF", kind, err)
		}
		c.Close()
		ended()
	}
	onLoop.expect(t, int64(requests), "all")
}

// chunk encodes b as a chunked body of chunks of size (and a trailer).
func chunk(b []byte, size int) []byte {
	var out []byte
	for p := b; len(p) > 0; p = p[min(len(p), size):] {
		out = fmt.Appendf(out, "%x;x=y\r\n", min(len(p), size))
		out = append(append(out, p[:min(len(p), size)]...), "\r\n"...)
	}
	return append(out, "0\r\nX-Sum: 1\r\n\r\n"...)
}

// A malformed chunked body, refused with 400 as on a goroutine: caught
// while the loop holds it with its head (a bad chunk size early on), the
// backend never sees the request and its connection goes back to the
// pool; caught after spillLimit went on (a bad CRLF after 100 KB), the
// backend connection, which got part of it, is reset. The record says
// bad_request either way, and the next client is served.
func TestHTTP1LoopBadChunkedBody(t *testing.T) {
	onLoop := countLoopExchanges(t)
	o := digestOrigin(t)
	be := http1Backend(o.addr)
	be.Pool.MaxConns = 1
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	head := "POST /digest/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	good := chunk(make([]byte, 100000), 10000)
	for _, tc := range []struct {
		name string
		body []byte
		sent bool // the backend got part of the request
	}{
		{"bad chunk size, held", []byte("5\r\nhello\r\nzz\r\n"), false},
		{"bad CRLF past spillLimit", append(good[:len(good)-len("0\r\nX-Sum: 1\r\n\r\n")], "3\r\nabcXY"...), true},
	} {
		before := o.requests.Load()
		c := dialClient(t, h.addr, false)
		go c.Write(append([]byte(head), tc.body...))
		status, _, closing := readBody(t, bufio.NewReader(c))
		if status != 400 || !closing {
			t.Errorf("%s: client got %d (closing %v), want 400, closing", tc.name, status, closing)
		}
		c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeBadRequest || td.Back.Cut != tc.sent {
			t.Errorf("%s: record: outcome %s (%v), back cut %v; want bad_request, back cut %v", tc.name, td.Outcome, td.Err, td.Back.Cut, tc.sent)
		}
		if sent := int64(len(head) + len(tc.body)); td.Front.BytesIn != sent {
			t.Errorf("%s: record: front bytes_in %d, want %d: every byte the client sent, the refused line's too", tc.name, td.Front.BytesIn, sent)
		}
		if !tc.sent && o.requests.Load() != before {
			t.Errorf("%s: the origin saw the request, want nothing of it sent", tc.name)
		}
		if got := roundTrips(t, h.addr, "GET /digest/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); !strings.HasPrefix(got[0], "200 0 ") {
			t.Errorf("%s: the next client got %q, want 200 (through a pool of one)", tc.name, got)
		}
		h.record(t)
	}
	onLoop.expect(t, 4, "the bad bodies and the GETs after them")
}

// A backend that answers before it has read the body. One answers 413
// and closes (lingering, as nginx does): the client gets the 413 whole
// while its body is still on the way. One answers 200 at once and
// waits: a client that then stops midway through its body keeps the
// session only for peer_fin_grace; the backend connection, which got
// part of a request, is reset and the front leg ends after the whole
// response. One neither reads nor answers: with its buffers full,
// nothing moves and after idle_timeout the client gets a 504.
func TestHTTP1LoopEarlyResponses(t *testing.T) {
	onLoop := countLoopExchanges(t)
	serve := func(answer string) string {
		stop := make(chan struct{})
		addr := loopback.Serve(t, func(c *net.TCPConn) {
			defer c.Close()
			br := bufio.NewReader(c)
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if answer == "" { // stall: read nothing more, answer nothing
				<-stop
				return
			}
			io.WriteString(c, answer)
			if strings.Contains(answer, "close") {
				c.CloseWrite()
			}
			io.Copy(io.Discard, br) // linger: read what comes until the proxy closes
		})
		t.Cleanup(func() { close(stop) })
		return addr
	}
	t.Run("413 and close", func(t *testing.T) {
		const answer = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large"
		h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(serve(answer)))
		c := dialClient(t, h.addr, false)
		n := 4 << 20
		go func() {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
			c.Write(make([]byte, n))
		}()
		status, got, closing := readBody(t, bufio.NewReader(c))
		if status != 413 || string(got) != "too large" || !closing {
			t.Errorf("client got %d %q (closing %v), want 413 \"too large\", closing", status, got, closing)
		}
		c.Close()
		if td := h.record(t); td.BackRequests != 1 || td.Front.BytesOut != int64(len(answer)) {
			t.Errorf("record: %d requests, %d bytes out to the client; want 1, %d", td.BackRequests, td.Front.BytesOut, len(answer))
		}
	})
	t.Run("200, then the client stops", func(t *testing.T) {
		const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		ln := config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
		ln.Close.PeerFinGrace = 200 * time.Millisecond
		h := startProxy(t, ln, http1Backend(serve(answer)))
		c := dialClient(t, h.addr, false)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
		br := bufio.NewReader(c)
		if status, got, _ := readBody(t, br); status != 200 || string(got) != "ok" {
			t.Errorf("client got %d %q, want 200 ok", status, got)
		}
		start := time.Now()
		if _, err := br.ReadByte(); err == nil { // the session ends: FIN or RST, never more bytes
			t.Error("a byte after the response, want the session's end")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the session ended %v after the response, want about peer_fin_grace (200ms)", d)
		}
		c.Close()
		td := h.record(t)
		if !td.Back.Cut || td.Back.Close != policy.CloseReset || td.BackRequests != 1 {
			t.Errorf("record: back cut %v close %s, %d requests; want the backend connection reset and cut, 1 request", td.Back.Cut, td.Back.Close, td.BackRequests)
		}
		if td.Outcome != engine.OutcomeTimeout { // the request never all reached the backend: not ok
			t.Errorf("record: outcome %s (%v), want timeout", td.Outcome, td.Err)
		}
	})
	t.Run("stalled backend", func(t *testing.T) {
		h := startProxy(t, config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(serve("")))
		c := dialClient(t, h.addr, false)
		n := 32 << 20 // more than every buffer on the way holds
		go func() {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
			c.Write(make([]byte, n))
		}()
		status, _, closing := readBody(t, bufio.NewReader(c))
		if status != 504 || !closing {
			t.Errorf("client got %d (closing %v), want 504, closing", status, closing)
		}
		c.SetLinger(0)
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeTimeout || !td.Back.Cut {
			t.Errorf("record: outcome %s (%v), back cut %v; want timeout, the backend connection reset", td.Outcome, td.Err, td.Back.Cut)
		}
	})
	onLoop.expect(t, 3, "all")
}

// An upgrade answered 101 and a CONNECT answered 200 become tunnels,
// relayed both ways on the loop once the response's head is out: the
// bytes the client sent right after its request go first, 4 MiB each
// way arrive whole (SHA-256), a client that half-closes gets the
// backend's last bytes and FIN, and no goroutine serves the tunnel. A
// client that resets mid-tunnel ends it as client_reset.
func TestHTTP1LoopTunnels(t *testing.T) {
	onLoop := countLoopExchanges(t)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Method == "CONNECT" {
			io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
		} else {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		}
		io.Copy(c, br) // echo until the client's FIN
		c.CloseWrite()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	payload := make([]byte, 4<<20)
	for i := range payload {
		payload[i] = byte(i*31 + i>>12)
	}
	for _, head := range []string{
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
		"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
	} {
		c := dialClient(t, h.addr, false)
		sent := make(chan error, 1)
		go func() {
			_, err := c.Write(append([]byte(head+"first"), payload...))
			if err == nil {
				err = c.CloseWrite()
			}
			sent <- err
		}()
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(head)[0]})
		if err != nil || resp.StatusCode/100 > 2 {
			t.Fatalf("%q: %v %v", head, resp, err)
		}
		if testRelay == "loop" && serving() != 0 {
			t.Errorf("%q: %d goroutines serve http1 sessions during the tunnel, want none", head, serving())
		}
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("%q: tunnel read after %d bytes: %v", head, len(got), err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("%q: send: %v", head, err)
		}
		if want := append([]byte("first"), payload...); sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("%q: %d bytes back, want %d by SHA-256", head, len(got), len(want))
		}
		c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.Front.Cut || td.Back.Cut || td.BackRequests != 1 {
			t.Errorf("%q: record: outcome %s (%v), cut %v/%v, %d requests; want ok, nothing cut, 1", head, td.Outcome, td.Err, td.Front.Cut, td.Back.Cut, td.BackRequests)
		}
		if want := int64(len(head) + 5 + len(payload)); td.Front.BytesIn != want {
			t.Errorf("%q: record: %d bytes in from the client, want %d", head, td.Front.BytesIn, want)
		}
	}

	c := dialClient(t, h.addr, false)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nping")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(br, b); return err }() != nil || string(b) != "ping" {
		t.Fatalf("echo %q", b)
	}
	c.SetLinger(0)
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeClientReset || !td.Back.Cut {
		t.Errorf("client reset mid-tunnel: outcome %s (%v), back cut %v; want client_reset, the backend leg cut", td.Outcome, td.Err, td.Back.Cut)
	}
	onLoop.expect(t, 3, "all")
}

// Behind a listener that takes a PROXY header, http1 sessions read it on
// the loop, with the refusals, records and bytes handed on of a session
// on a goroutine: a header split across segments, v2, optional without
// one, and each way a header is refused (missing when required, cut
// short then silent, malformed, from an untrusted source, a client that
// sends nothing): an RST, nothing sent, bad_proxy_header. Sessions that
// pass reach the backend as the header's client, on the loop.
func TestHTTP1LoopProxyHeader(t *testing.T) {
	onLoop := countLoopExchanges(t)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path) })
	get := "GET /pp HTTP/1.1\r\nHost: x\r\n\r\n"
	last := "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	v2 := v2Header(t)
	cases := []struct {
		name    string
		ln      config.Listener
		parts   []string
		version string // "": refused
		client  string
	}{
		{"v1 split across three segments", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"PROXY TCP4 192.0", ".2.7 192.0.2.1 55", "55 80\r\n" + get + last}, "v1", "192.0.2.7:5555"},
		{"v2 with the requests in the same segment", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2 + get + last}, "v2", "192.0.2.7:40000"},
		{"v2 split inside its addresses", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2[:20], v2[20:] + get, last}, "v2", "192.0.2.7:40000"},
		{"optional without a header", ppListener(config.ProxyProtocolOptional, "127.0.0.0/8"),
			[]string{get + last}, "none", ""},
		{"required, no header", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), []string{get}, "", ""},
		{"v1 cut short, then silence past the timeout", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 "}, "", ""},
		{"malformed v1 addresses", ppListener(config.ProxyProtocolOptional, "127.0.0.0/8"),
			[]string{"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n" + get}, "", ""},
		{"garbage v2", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\xff" + get}, "", ""},
		{"required, untrusted source", ppListener(config.ProxyProtocolRequired, "10.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n" + get}, "", ""},
		{"optional, header from an untrusted source", ppListener(config.ProxyProtocolOptional, "10.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n" + get}, "", ""},
		{"a client silent past the timeout", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), nil, "", ""},
	}
	loops := int64(0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.ln.ProxyProtocolTimeout = 300 * time.Millisecond
			h := startProxy(t, tc.ln, http1Backend(o.addr))
			got, _ := exchange(t, h.addr, tc.parts...)
			td := h.record(t)
			if tc.version == "" {
				if td.Outcome != engine.OutcomeBadProxyHeader || got != "" || td.Front.Close != policy.CloseReset || td.Front.TimeWait != policy.SideNone || td.Front.Cut {
					t.Errorf("outcome %s (%v), client got %q, front close %s time_wait %s cut %v; want bad_proxy_header, nothing, reset, none, not cut",
						td.Outcome, td.Err, got, td.Front.Close, td.Front.TimeWait, td.Front.Cut)
				}
				return
			}
			loops += 2
			if n := strings.Count(got, "HTTP/1.1 200 OK"); n != 2 || !strings.HasSuffix(got, "GET /last") {
				t.Errorf("client got %q, want two 200s, the last for GET /last", got)
			}
			if td.Outcome != engine.OutcomeOK || td.ProxyProtocol != tc.version || td.BackRequests != 2 {
				t.Errorf("record: outcome %s (%v), proxy_protocol %q, %d requests; want ok, %q, 2", td.Outcome, td.Err, td.ProxyProtocol, td.BackRequests, tc.version)
			}
			if want := tc.client; want != "" && td.Client.String() != want {
				t.Errorf("record: client %s, want %s (from the header)", td.Client, want)
			}
		})
	}
	onLoop.expect(t, loops, "all that passed")
}

// A GET on the loops takes an idle backend connection its loop vouches
// for without the pool's peek. Vouched for even once the origin closed it
// (quietHook: what a FIN arriving after the loop's last wait looks like),
// the request meets the closed connection, goes again on another (the
// record says so), and the client gets its answer. A request that could
// not go again never takes one unpeeked.
func TestHTTP1LoopRetriesOnAnUnpeekedClosedConn(t *testing.T) {
	if testRelay != "loop" {
		t.Skip("exchanges run on the loops only with relay = \"loop\"")
	}
	var asked atomic.Int64
	quietHook = func(int) bool { asked.Add(1); return true }
	t.Cleanup(func() { quietHook = nil })
	closed := make(chan struct{}, 100)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer func() { // every connection closes once it answered
			c.Close()
			select {
			case closed <- struct{}{}:
			default:
			}
		}()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	b := http1Backend(be)
	b.Pool.Warm = 0
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	ask := func(raw string) *engine.Teardown {
		t.Helper()
		if got := roundTrips(t, h.addr, raw, 1); got[0] != "200 ok" {
			t.Fatalf("%q: %q, want the answer", raw[:4], got[0])
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK {
			t.Fatalf("%q: outcome %s (%v)", raw[:4], td.Outcome, td.Err)
		}
		return td
	}
	get := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	ask(get) // its connection goes back to the pool, and the origin closes it
	// The POST peeks: once the origin closed the connection (its FIN is
	// in, on loopback, when close returns), the peek finds it closed and
	// the POST goes on a new one. (A FIN still on its way would meet the
	// POST, which cannot go again: a 502, with or without the peek.)
	<-closed
	ask("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	if n := asked.Load(); n != 0 {
		t.Errorf("a POST, which cannot go again, asked %d times whether a connection is quiet; want the peek", n)
	}
	// A client connection lands on any loop; a connection idle on another
	// is peeked, not vouched for. Within a few GETs one lands where the
	// closed connection waits.
	vouchedRetry := false
	for i := 0; i < 30 && !vouchedRetry; i++ {
		<-closed // the connection now idle was closed by the origin
		before := asked.Load()
		td := ask(get)
		vouchedRetry = asked.Load() > before && td.Back.Reason == policy.ReasonRetried
	}
	if !vouchedRetry {
		t.Errorf("30 GETs, each on a closed idle connection: none vouched for and retried (quiet asked %d times)", asked.Load())
	}
}

// A keep-alive request served on the loops allocates nothing in the
// proxy: its head and the response's are parsed into heads the loop kept
// with their storage, its exchange and buffers are the loop's kept ones.
// Measured as a benchmark measures (every allocation in the process),
// against the client and backend alone.
func TestHTTP1KeepAliveOnTheLoopsAllocatesNothing(t *testing.T) {
	perRequest := func(proxied bool) float64 {
		res := testing.Benchmark(func(b *testing.B) {
			addr := benchBackend(b)
			if proxied {
				addr, _ = benchServer(b, benchConfig(addr, "http1", "loop", "all", -1, -1))
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, len(response))
			for range 3 { // the session, its backend connection, the loop's kept heads
				if err := keepAliveRequest(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				if err := keepAliveRequest(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		if res.N == 0 {
			t.Fatal("the measuring run failed")
		}
		return float64(res.MemAllocs) / float64(res.N)
	}
	direct, proxied := perRequest(false), perRequest(true)
	if proxied-direct >= 0.5 {
		t.Errorf("%.2f allocations a keep-alive request through the loops (%.2f without the proxy), want none of the proxy's", proxied, direct)
	}
}

// A chunked request body held with its head (nothing sent yet) on a kept
// backend connection that the backend closes meanwhile (its keep-alive
// timeout ran out during the hold) moves to another connection: none of
// the request reached the closed one, so a POST may go too. It was
// answered 502 and never reached the backend. Both relays, the hold
// ending with the body and at spillAfter with the body still coming (on
// goroutines, the spill's timer sends from a goroutine of its own); a
// connection dialed for the request that the backend closes during the
// hold (its wait for a request head, as nginx's client_header_timeout),
// which got 502 when the pooled one moved; and a client that aborts once
// its request moved: the new connection ends with it, never pooled half
// a request.
func TestHTTP1HeldChunkedBodyMovesOffAClosedConnection(t *testing.T) {
	heldChunkedBodyMoves(t, false, false, false)
	heldChunkedBodyMoves(t, true, false, false)
	heldChunkedBodyMoves(t, false, true, false)
	heldChunkedBodyMoves(t, true, true, false)
	heldChunkedBodyMoves(t, true, false, true)
}

func heldChunkedBodyMoves(t *testing.T, timed, fresh, abort bool) {
	if timed {
		old := spillAfter
		spillAfter = 100 * time.Millisecond
		defer func() { spillAfter = old }()
	}
	var conns atomic.Int32
	closeFirst, firstClosed, moved := make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	secondEnded := make(chan struct{})
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		first := conns.Add(1) == 1
		if !first {
			defer close(secondEnded)
		}
		if first && fresh { // no request head in time: closed
			<-closeFirst
			c.Close()
			close(firstClosed)
			return
		}
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if !first {
				moved <- struct{}{}
			}
			body, _ := io.ReadAll(req.Body)
			msg := fmt.Sprintf("%s %d", req.Method, len(body))
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
			if first {
				<-closeFirst // idle until its keep-alive timeout, say
				c.Close()
				close(firstClosed)
				return
			}
		}
	})
	started := make(chan struct{}, 2)
	hook := &exchangeHeldHook // an exchange took its backend connection
	if testRelay == "loop" {
		hook = &loopExchangeHook
	}
	*hook = func() { started <- struct{}{} }
	defer func() { *hook = nil }()
	b := http1Backend(be)
	b.Pool.Warm = 0 // the second connection is the move's
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	c := dialClient(t, h.addr, false)
	defer c.Close()
	br := bufio.NewReader(c)
	if !fresh {
		if got := getOn(t, c, br, "/"); !strings.HasPrefix(got, "200 ") {
			t.Fatalf("GET: %q, want 200", got)
		}
		<-started // the GET's exchange
	}
	// A POST whose chunked body is held, on the GET's connection (kept
	// for the client's next request), or on one dialed for it.
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the POST's exchange never started")
	}
	close(closeFirst)
	<-firstClosed
	if timed {
		select { // the hold ends at spillAfter: what was held goes
		case <-moved:
		case <-time.After(5 * time.Second):
			t.Fatal("the held request never reached the backend's second connection")
		}
	}
	if abort {
		c.SetLinger(0)
		c.Close()
		select { // the moved request's connection ends with the client
		case <-secondEnded:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend's second connection outlived the client's abort")
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeClientAborted || td.Back.Close == policy.ClosePooled || td.Back.Reason != policy.ReasonRetried {
			t.Errorf("abort after the move: record %s (%v), back close %s reason %q; want client_aborted, the back leg closed, retried",
				td.Outcome, td.Err, td.Back.Close, td.Back.Reason)
		}
		return
	}
	io.WriteString(c, "0\r\n\r\n") // the body ends (and the hold with it, unless timed)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != "POST 5" || conns.Load() != 2 {
		t.Errorf("timed %v, fresh %v: POST: %d %q on the backend's connection %d; want 200 \"POST 5\" (the body reached the backend) on its second", timed, fresh, resp.StatusCode, got, conns.Load())
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Back.Reason != policy.ReasonRetried {
		t.Errorf("timed %v, fresh %v: record: %s (%v), back reason %q; want ok, retried", timed, fresh, td.Outcome, td.Err, td.Back.Reason)
	}
}

// A client that half-closes right behind its request, whose answer takes
// the backend a while: the record's fin_in_ms is when the FIN came (the
// loop's edge said so), not when the session read it after the answer.
func TestHTTP1LoopRecordsWhenTheClientsFINCame(t *testing.T) {
	if testRelay != "loop" {
		t.Skip(`relay = "goroutines": the FIN is seen when the answer ends`)
	}
	const pace = 200 * time.Millisecond // the backend's, before it answers
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			time.Sleep(pace)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		}
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	for i := range 3 {
		c := dialClient(t, h.addr, false)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.CloseWrite()
		if status, b, _ := readBody(t, bufio.NewReader(c)); status != 200 || string(b) != "hello" {
			t.Fatalf("%d: answer %d %q", i, status, b)
		}
		c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.Front.FINIn < 0 || td.Front.FINIn >= pace/2 || td.Front.FINOut < pace {
			t.Errorf("%d: record %s (%v), front fin_in %v, fin_out %v: want ok, the client's FIN within %v of the accept, the proxy's after the answer",
				i, td.Outcome, td.Err, td.Front.FINIn, td.Front.FINOut, pace/2)
		}
	}
}
