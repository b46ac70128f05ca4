package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// The matrix's http1 cell with clients that are not polite, through nginx
// on its own port: a client that half-closes right after its request, one
// that stops reading a body larger than the buffers on its way for longer
// than peer_fin_grace, and one that pipelines two requests and closes the
// instant it has the second body. Each reads every body whole (SHA-256),
// each session ends ok with nothing cut, and every record's TIME-WAIT
// claims are matched to the kernel's sockets by 4-tuple, as in every cell.

const (
	portImpoliteHTTP1 = 8093
	impoliteWebPort   = 83
	impoliteBody      = 4 << 20
	impoliteEach      = 2 // clients of each kind
)

func impoliteHTTP1Listener(t testing.TB, e *pairEnv) ListenerOpts {
	l := e.listenerTo("impolite_http1", portImpoliteHTTP1, e.webAt(impoliteWebPort))
	l.Protocol = "http1"
	return l
}

// impoliteKinds are the cell's clients, by name: each sends its requests
// on c and returns what it read.
var impoliteKinds = map[string]func(c *net.TCPConn, req string) saw{
	"half-closes after its request": func(c *net.TCPConn, req string) saw {
		var s saw
		if s.send(c, []byte(req)) == nil {
			if err := c.CloseWrite(); err != nil {
				s.writeEnd = endKind(err)
			}
		}
		br := bufio.NewReader(c)
		s.in, s.sum = readBodies(br, 1)
		_, _, s.end = hashAll(br)
		return s
	},
	"pauses reading": func(c *net.TCPConn, req string) saw {
		var s saw
		_ = s.send(c, []byte(req))
		time.Sleep(matrixGrace + 200*time.Millisecond) // the paused reader under test, not a synchronisation
		br := bufio.NewReader(c)
		s.in, s.sum = readBodies(br, 1)
		if err := c.CloseWrite(); err != nil {
			s.writeEnd = endKind(err)
		}
		_, _, s.end = hashAll(br)
		return s
	},
	"closes once it has the body": func(c *net.TCPConn, req string) saw {
		var s saw
		_ = s.send(c, []byte(req+req))
		s.in, s.sum = readBodies(bufio.NewReader(c), 2)
		s.end = "closed"
		return s
	},
}

// readBodies reads n responses and returns their bodies' total length
// and the hex SHA-256 of each, joined by "+"; a response that fails
// stops it, its error in place of a sum.
func readBodies(br *bufio.Reader, n int) (int64, string) {
	var total int64
	var sums string
	for i := range n {
		if i > 0 {
			sums += "+"
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return total, sums + "response: " + endKind(err)
		}
		h := sha256.New()
		k, err := io.Copy(h, resp.Body)
		total += k
		if err != nil {
			return total, sums + "body: " + endKind(err)
		}
		sums += hex.EncodeToString(h.Sum(nil))
	}
	return total, sums
}

// runImpoliteHTTP1: every client reads its bodies whole and its session
// ends ok, nothing cut; the client's FIN comes first on the front leg
// (the half-closing one's before the answer, which the proxy reads only
// once the answer is out), so its placement is clientEnds's. The back
// leg stays in the pool: nothing to place.
func runImpoliteHTTP1(t *testing.T, e *pairEnv) cellOut {
	addr := e.listen(portImpoliteHTTP1)
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: web\r\n\r\n", e.web.BlobPath(impoliteBody))
	sum := e.web.BlobSHA256(t, impoliteBody)
	kindOf := map[string]string{}
	seen := map[string]saw{}
	for kind, f := range impoliteKinds {
		for a, s := range clients(t, e, addr, impoliteEach, func(c *net.TCPConn) saw { return f(c, req) }) {
			kindOf[a], seen[a] = kind, s
		}
	}
	recs := waitListenerRecords(t, e.main, "impolite_http1", len(seen), 20*time.Second)
	requireOutcome(t, recs, "ok")
	for _, r := range recs {
		a := r.Str("front.peer")
		s, kind := seen[a], kindOf[a]
		want, wantIn := sum, int64(impoliteBody)
		if kind == "closes once it has the body" {
			want, wantIn = sum+"+"+sum, 2*impoliteBody
		}
		if s.in != wantIn || s.sum != want || s.writeEnd != "" || (s.end != "closed" && !endedWell(s.end, r, "front")) || r["front.cut"] == true {
			t.Errorf("the client that %s read %d bytes (sums ok %v, %q) ending in %q, write %q; want %d and the bodies' SHA-256, a clean end\n%s",
				kind, s.in, s.sum == want, s.sum, s.end, s.writeEnd, wantIn, legs(r))
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(impoliteWebPort)},
		want: certain(clientEnds(e.pair.front), "")}
}

// The http1 cell again with answers small enough for the proxy to send
// them in its FIN's segment (held: 512 bytes or fewer), each closing the
// front leg: the request says Connection: close, or speaks HTTP/1.0. The
// clients race that FIN (one closes the instant it has the body, many at
// once), half-close before it, pause reading past peer_fin_grace while it
// waits, read to EOF, or close before the answer comes. Each but the
// last reads its body whole (SHA-256) and its session ends ok with
// nothing cut; the last's ends in its reset (its kernel refuses the
// answer). Every record's TIME-WAIT claims are matched to the kernel's
// sockets by 4-tuple. Its own listener and
// nginx port: the answer closes the front leg here, where the cell above
// keeps it, and a cell's placements are judged on its own sockets.

const (
	portClosingHTTP1 = 8094
	closingWebPort   = 84
)

func closingHTTP1Listener(t testing.TB, e *pairEnv) ListenerOpts {
	l := e.listenerTo("closing_http1", portClosingHTTP1, e.webAt(closingWebPort))
	l.Protocol = "http1"
	return l
}

// closingRequest asks for path and says the connection closes after.
func closingRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
}

// closesAtOnce is the closing cell's client that closes its socket (not
// only its sending side) right after its request, before the answer.
const closesAtOnce = "closes right after its request"

// closingKinds are the closing cell's clients, by name, with how many of
// each: each sends its request on c, path the body's, and returns what it
// read.
var closingKinds = []struct {
	name string
	n    int
	f    func(c *net.TCPConn, path string) saw
}{
	{"closes once it has the body", 24, func(c *net.TCPConn, path string) saw {
		var s saw
		_ = s.send(c, []byte(closingRequest(path)))
		s.in, s.sum = readBodies(bufio.NewReader(c), 1)
		s.end = "closed"
		return s
	}},
	{"half-closes after its request", 4, func(c *net.TCPConn, path string) saw {
		return impoliteKinds["half-closes after its request"](c, closingRequest(path))
	}},
	{"pauses reading", 2, func(c *net.TCPConn, path string) saw {
		var s saw
		_ = s.send(c, []byte(closingRequest(path)))
		time.Sleep(matrixGrace + 200*time.Millisecond) // the paused reader under test, not a synchronisation
		br := bufio.NewReader(c)
		s.in, s.sum = readBodies(br, 1)
		_, _, s.end = hashAll(br)
		return s
	}},
	{closesAtOnce, 4, func(c *net.TCPConn, path string) saw {
		var s saw
		_ = s.send(c, []byte(closingRequest(path)))
		s.end = "closed"
		return s
	}},
	{"speaks HTTP/1.0 and reads to EOF", 4, func(c *net.TCPConn, path string) saw {
		var s saw
		_ = s.send(c, []byte("GET "+path+" HTTP/1.0\r\nHost: web\r\n\r\n"))
		br := bufio.NewReader(c)
		s.in, s.sum = readBodies(br, 1)
		_, _, s.end = hashAll(br)
		return s
	}},
}

// runClosingHTTP1: every client but the one that closes at once reads its
// body whole and its session ends ok, nothing cut. Placements are
// timing's, judged against the kernel: the proxy closes after the answer
// without waiting, so even the half-closing client's FIN may come second.
// The back leg stays in the pool: nothing to place.
func runClosingHTTP1(t *testing.T, e *pairEnv) cellOut {
	addr := e.listen(portClosingHTTP1)
	path, sum := e.web.BlobPath(racingBody), e.web.BlobSHA256(t, racingBody)
	kindOf := map[string]string{}
	seen := map[string]saw{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range closingKinds {
		wg.Go(func() {
			got := clients(t, e, addr, k.n, func(c *net.TCPConn) saw { return k.f(c, path) })
			mu.Lock()
			defer mu.Unlock()
			for a, s := range got {
				kindOf[a], seen[a] = k.name, s
			}
		})
	}
	wg.Wait()
	recs := waitListenerRecords(t, e.main, "closing_http1", len(seen), 20*time.Second)
	for _, r := range recs {
		a := r.Str("front.peer")
		s, kind := seen[a], kindOf[a]
		if kind == closesAtOnce {
			// Its kernel refuses the answer that comes after its close
			// with an RST (or resets on closing with it unread): no
			// TIME-WAIT on it, whatever FIN went. A safe reset, once
			// its kernel took the answer, may come first; a reset of
			// its own after its kernel acknowledged the whole answer
			// cut nothing (ok).
			peer := r.Str("front.close") == "peer_reset" && (r.Str("outcome") == "client_reset" || r.Str("outcome") == "ok" && r["front.cut"] == false)
			safe := r.Str("outcome") == "ok" && r.Str("front.close") == "reset" && r["front.cut"] == false
			if !peer && !safe || s.writeEnd != "" {
				t.Errorf("the client that %s: outcome %q, front close %q, write %q; want client_reset and peer_reset (ok once the answer was acknowledged), or a safe reset, its request sent\n%s",
					kind, r.Str("outcome"), r.Str("front.close"), s.writeEnd, legs(r))
			}
			continue
		}
		if r.Str("outcome") != "ok" {
			t.Errorf("the client that %s: outcome %q, want ok\n%s", kind, r.Str("outcome"), legs(r))
		}
		// The proxy does not wait for a half-close: a client slow to
		// make one after its request may find the leg already ended by a
		// safe reset (target nowhere or auto), its answer whole.
		lateHalfClose := s.writeEnd != "" && kind == "half-closes after its request" && r.Str("front.close") == "reset"
		if s.in != racingBody || s.sum != sum || s.writeEnd != "" && !lateHalfClose || (s.end != "closed" && !endedWell(s.end, r, "front")) || r["front.cut"] == true {
			t.Errorf("the client that %s read %d bytes (sum ok %v, %q) ending in %q, write %q; want %d and the body's SHA-256, a clean end\n%s",
				kind, s.in, s.sum == sum, s.sum, s.end, s.writeEnd, racingBody, legs(r))
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(closingWebPort)}, want: certain("", "")}
}
