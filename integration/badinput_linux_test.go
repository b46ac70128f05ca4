package integration

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestBadInput feeds the closeproxy binary, through real sockets, what
// peers get wrong: PROXY headers that are malformed, truncated, missing,
// untrusted or too slow, a backend nobody listens on, a backend that resets
// in the middle of its response, and a client that resets mid-stream. Each
// must end with the connection closed at the client and exactly one record
// with the right outcome, and the proxy must go on serving.
func TestBadInput(t *testing.T) {
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{4 << 20}})
	resetting := startResettingBackend(t, topo, addrPort(topo.WebAddr, 82))
	listen := func(port uint16) string { return addrPort(topo.ProxyFront, port) }
	back := CloseOpts{PeerFinGrace: "300ms"}
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(
		ListenerOpts{Name: "pp", Listen: listen(8080), Backend: web.Addr.String(), Back: back,
			ProxyProtocol: "required", ProxyProtocolTrusted: []string{topo.LBAddr.String()}, ProxyProtocolTimeout: "500ms"},
		ListenerOpts{Name: "untrusted", Listen: listen(8081), Backend: web.Addr.String(), Back: back,
			ProxyProtocol: "required", ProxyProtocolTrusted: []string{"192.0.2.0/24"}},
		ListenerOpts{Name: "dead", Listen: listen(8082), Backend: addrPort(topo.WebAddr, 81), ConnectTimeout: "1s"},
		ListenerOpts{Name: "resetting", Listen: listen(8083), Backend: resetting, Back: back},
		ListenerOpts{Name: "plain", Listen: listen(8084), Backend: web.Addr.String(), Back: back},
	))
	get := "GET / HTTP/1.1\r\nHost: web\r\n\r\n"
	v1 := "PROXY TCP4 192.0.2.7 10.231.1.2 40000 8080\r\n"
	v2sig := "\r\n\r\n\x00\r\nQUIT\n"

	cases := []struct {
		name, listener, outcome string
		// talk does the client's part; it returns once the client has done
		// everything it means to, not necessarily once the proxy closed.
		talk func(t *testing.T, c *net.TCPConn)
		// wantBytes, if set, must appear in what the client read.
		wantBytes string
		// maxMS bounds the record's duration_ms (0: unchecked), minMS too.
		minMS, maxMS float64
	}{
		{name: "malformed PROXY header", listener: "pp", outcome: "bad_proxy_header",
			talk: write("PROXY TCP4 not-an-address 10.231.1.2 40000 8080\r\n" + get)},
		{name: "truncated PROXY v1 header, then FIN", listener: "pp", outcome: "bad_proxy_header",
			talk: writeThenFIN("PROXY TCP4 192.0.2.7 10.231.1.2 4")},
		{name: "truncated PROXY v2 header, then FIN", listener: "pp", outcome: "bad_proxy_header",
			talk: writeThenFIN(v2sig + "\x21\x11\x00\x0c\xc0\x00")},
		{name: "missing PROXY header (required)", listener: "pp", outcome: "bad_proxy_header",
			talk: write(get)},
		{name: "PROXY header from an untrusted source", listener: "untrusted", outcome: "bad_proxy_header",
			talk: write(strings.Replace(v1, "8080", "8081", 1) + get)},
		{name: "slow PROXY header, byte by byte past proxy_protocol_timeout", listener: "pp", outcome: "bad_proxy_header",
			talk: trickle(v1+get, 25*time.Millisecond), minMS: 450, maxMS: 1500},
		{name: "unreachable backend (nothing listens)", listener: "dead", outcome: "dial_failed",
			talk: write(get)},
		{name: "backend resets mid-response", listener: "resetting", outcome: "backend_reset",
			talk: write(get), wantBytes: "HTTP/1.1 200 OK"},
		{name: "client resets mid-stream", listener: "plain", outcome: "client_reset",
			talk: resetAfter("GET /blob/4194304 HTTP/1.1\r\nHost: web\r\n\r\n", 64<<10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(cp.Records())
			addr := listen(map[string]uint16{"pp": 8080, "untrusted": 8081, "dead": 8082, "resetting": 8083, "plain": 8084}[tc.listener])
			local := "" // the client's address, when the connect returned
			c, err := dialFrom(t, topo.LB, addr)
			switch {
			case errors.Is(err, unix.ECONNRESET) && tc.outcome != "client_reset":
				// The proxy refused before the connect returned: the
				// connection is closed at the client already.
				t.Logf("dial: %v", err)
			case err != nil:
				t.Fatalf("dial %s: %v", addr, err)
			default:
				local = c.LocalAddr().String()
				tc.talk(t, c)
				if tc.outcome != "client_reset" {
					got := readUntilClosed(t, c)
					if !bytes.Contains(got, []byte(tc.wantBytes)) {
						t.Errorf("client read %q, want it to contain %q", got, tc.wantBytes)
					}
				}
			}
			rec := cp.WaitRecords(t, before+1, 10*time.Second)[before]
			if rec.Str("outcome") != tc.outcome || rec.Str("listener") != tc.listener || (local != "" && rec.Str("front.peer") != local) {
				t.Errorf("record: outcome %q listener %q front.peer %q (error %q), want %q %q %s",
					rec.Str("outcome"), rec.Str("listener"), rec.Str("front.peer"), rec.Str("error"), tc.outcome, tc.listener, local)
			}
			if ms := rec.Num("duration_ms"); tc.maxMS > 0 && (ms < tc.minMS || ms > tc.maxMS) {
				t.Errorf("record duration_ms %v, want %v..%v", ms, tc.minMS, tc.maxMS)
			}
			t.Logf("record: outcome %s, error %q, front.close %s, duration_ms %v",
				rec.Str("outcome"), rec.Str("error"), rec.Str("front.close"), rec.Num("duration_ms"))
		})
	}

	// Still alive and serving, with a good header and without.
	c, err := dialFrom(t, topo.LB, listen(8080))
	if err != nil {
		t.Fatal(err)
	}
	write(v1+"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")(t, c)
	if got := readUntilClosed(t, c); !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK")) || !bytes.HasSuffix(got, []byte("ok\n")) {
		t.Errorf("after the bad input, a good PROXY header and request got %q", got)
	}
	requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: listen(8084), N: 20, C: 5, ExpectBytes: 3}), 20)
	recs := cp.WaitRecords(t, len(cases)+21, 10*time.Second)
	if len(recs) != len(cases)+21 {
		t.Errorf("%d records for %d connections", len(recs), len(cases)+21)
	}
	if good := recs[len(cases)]; good.Str("client") != "192.0.2.7:40000" || good.Str("proxy_protocol") != "v1" || good.Str("outcome") != "ok" {
		t.Errorf("record of the good PROXY connection: client %q proxy_protocol %q outcome %q",
			good.Str("client"), good.Str("proxy_protocol"), good.Str("outcome"))
	}
	if cp.Exited() {
		t.Fatalf("closeproxy exited: %s", cp.Output())
	}
}

// write sends s. A proxy that refuses the connection at once may have
// reset it before the write: that is logged, and readUntilClosed judges.
func write(s string) func(*testing.T, *net.TCPConn) {
	return func(t *testing.T, c *net.TCPConn) {
		t.Helper()
		if _, err := io.WriteString(c, s); errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
			t.Logf("write: %v", err)
		} else if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

func writeThenFIN(s string) func(*testing.T, *net.TCPConn) {
	return func(t *testing.T, c *net.TCPConn) {
		t.Helper()
		write(s)(t, c)
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("shutdown write: %v", err)
		}
	}
}

// trickle writes s one byte per pause, until done or the proxy closes.
func trickle(s string, pause time.Duration) func(*testing.T, *net.TCPConn) {
	return func(t *testing.T, c *net.TCPConn) {
		for i := range len(s) {
			if _, err := c.Write([]byte{s[i]}); err != nil {
				t.Logf("write stopped after %d of %d bytes: %v", i, len(s), err)
				return
			}
			time.Sleep(pause) // the slowness is the input under test
		}
	}
}

// resetAfter sends req, reads n bytes of the response, then resets.
func resetAfter(req string, n int64) func(*testing.T, *net.TCPConn) {
	return func(t *testing.T, c *net.TCPConn) {
		t.Helper()
		write(req)(t, c)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.CopyN(io.Discard, c, n); err != nil {
			t.Fatalf("read %d of %d bytes before resetting: %v", got, n, err)
		}
		if err := c.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// readUntilClosed reads until the proxy ends the connection (EOF or
// reset), closes the client's end too, and returns what arrived; a
// connection still open after 5s fails the test.
func readUntilClosed(t testing.TB, c *net.TCPConn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open after 5s; read %q", got)
	case err != nil && !errors.Is(err, unix.ECONNRESET):
		t.Fatalf("read: %v", err)
	}
	return got
}

// startResettingBackend serves, in the web namespace on addr, a response
// that promises 100000 bytes, sends 1000, waits until they are
// acknowledged, and resets the connection (SO_LINGER 0).
func startResettingBackend(t testing.TB, topo *Topology, addr string) string {
	t.Helper()
	ln := listenIn(t, topo.Web, addr)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			// concurrently: the proxy's warm pool holds idle connections
			// that never send a request
			wg.Add(1)
			go func() { defer wg.Done(); resetMidResponse(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return addr
}

func resetMidResponse(c *net.TCPConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
		return
	}
	body := bytes.Repeat([]byte("x"), 1000)
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+string(body)); err != nil {
		return
	}
	loopback.Acked(c, 2*time.Second)
	_ = c.SetLinger(0)
}
