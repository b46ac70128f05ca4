package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The matrix's abort cells: a client announces a 1000-byte body, sends 10
// bytes and closes (or resets). In tcp mode the proxy cannot know the body
// is short: it passes the client's FIN on. In http1 mode it knows: the
// request was cut, and the backend must learn it from an RST.

const (
	portAbort      = 8087
	portAbortHTTP1 = 8088
	abortHead      = "POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\n"
	abortSent      = "0123456789"
	abortBody      = 1000
	abortConns     = 8 // every other one resets
	abortNormal    = 5 // whole requests after the aborted ones (http1)
)

// readHeadLines reads an HTTP head up to its blank line.
func readHeadLines(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			return nil
		}
	}
}

// readBody reads up to want bytes of a body as they come, says on arrived
// once at least at of them are in (and the body is not whole yet), and
// returns the bytes read and how reading ended ("" when the body was
// whole).
func readBody(br *bufio.Reader, want, at int64, arrived chan<- struct{}) (int64, string) {
	buf := make([]byte, 32<<10)
	var got int64
	told := false
	for got < want {
		n, err := br.Read(buf[:min(int64(len(buf)), want-got)])
		got += int64(n)
		if !told && got >= at && got < want {
			told = true
			select {
			case arrived <- struct{}{}:
			default: // nobody waits for so many
			}
		}
		if err != nil {
			return got, endKind(err)
		}
	}
	return got, ""
}

func abortListener(t testing.TB, e *pairEnv) ListenerOpts {
	log := e.sawLog("abort_mid_body")
	be := scriptBackend(t, e.topo.Web, e.webAt(9087).String(), func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		var s saw
		if err := readHeadLines(br); err != nil {
			s.end = "head: " + endKind(err)
		} else {
			s.in, s.end = readBody(br, abortBody, int64(len(abortSent)), log.arrived)
		}
		log.put(c, s)
	})
	return e.listenerTo("abort_mid_body", portAbort, netip.MustParseAddrPort(be))
}

// abortOne sends the head and the first bytes, waits until the backend has
// them, then closes the connection, with an RST when rst. It returns the
// client's address and when it closed.
func abortOne(t testing.TB, e *pairEnv, addr netip.AddrPort, log *sawLog, rst bool) (string, time.Time) {
	t.Helper()
	c, err := dialFrom(t, e.topo.LB, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, abortHead+abortSent); err != nil {
		t.Fatalf("send the request's start: %v", err)
	}
	select {
	case <-log.arrived:
	case <-time.After(5 * time.Second):
		t.Fatalf("the backend never got the body's first bytes")
	}
	if rst {
		_ = c.SetLinger(0)
	}
	local, at := c.LocalAddr().String(), time.Now()
	c.Close()
	return local, at
}

type aborted struct {
	rst bool
	at  time.Time
}

// runAbort (tcp): after a FIN the backend reads exactly the 10 bytes, then
// EOF, promptly; nothing was cut, so the record is ok. The back leg ends
// proxy-first toward a backend that waits for the body: its FIN is passed
// on (rule 1), TIME-WAIT on the proxy; the front leg ends client-first.
// After an RST the backend reads the 10 bytes, then an RST: the stream
// toward it was cut (client_reset, back.cut); no TIME-WAIT anywhere.
func runAbort(t *testing.T, e *pairEnv) cellOut {
	addr, log := e.listen(portAbort), e.sawLog("abort_mid_body")
	clientsAt := map[string]aborted{}
	for i := range abortConns {
		local, at := abortOne(t, e, addr, log, i%2 == 1)
		clientsAt[local] = aborted{i%2 == 1, at}
	}
	recs := waitListenerRecords(t, e.main, "abort_mid_body", abortConns, 20*time.Second)
	sent := float64(len(abortHead) + len(abortSent))
	for _, r := range recs {
		a := clientsAt[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		if r.Num("front.bytes_in") != sent || r.Num("back.bytes_out") != sent || be.in != int64(len(abortSent)) {
			t.Errorf("record %v: front.bytes_in %v, back.bytes_out %v, the backend read %d body bytes; want %v, %v, %d",
				r["id"], r.Num("front.bytes_in"), r.Num("back.bytes_out"), be.in, sent, sent, len(abortSent))
		}
		if took := be.at.Sub(a.at); took > 2*time.Second {
			t.Errorf("record %v: the backend's connection ended %v after the client's, want promptly", r["id"], took)
		}
		switch {
		case a.rst && (r.Str("outcome") != "client_reset" || r["back.cut"] != true || r.Str("back.close") != "reset" || be.end != "reset"):
			t.Errorf("record %v (client reset): outcome %q, back.cut %v, back.close %q; the backend's read ended %q; want client_reset, cut, reset, reset",
				r["id"], r.Str("outcome"), r["back.cut"], r.Str("back.close"), be.end)
		case !a.rst && (r.Str("outcome") != "ok" || r["front.cut"] != false || r["back.cut"] != false || be.end != "eof"):
			t.Errorf("record %v (client FIN): outcome %q (%s), cut front %v back %v; the backend's read ended %q; want ok, nothing cut, EOF",
				r["id"], r.Str("outcome"), r.Str("error"), r["front.cut"], r["back.cut"], be.end)
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9087)}, want: func(r Record) placement {
		if clientsAt[r.Str("front.peer")].rst {
			return placement{"none", "none"}
		}
		return placement{clientEnds(e.pair.front), "proxy"}
	}}
}

// The http1 abort cell's backend serves keep-alive requests: it reads each
// body whole and answers abortReply, or logs how the connection ended.
var abortReply = blob(3000)

func abortHTTP1Listener(t testing.TB, e *pairEnv) ListenerOpts {
	log := e.sawLog("abort_mid_body_http1")
	be := scriptBackend(t, e.topo.Web, e.webAt(9088).String(), func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		var s saw
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				s.end = endKind(err)
				break
			}
			if s.in, s.end = readBody(br, req.ContentLength, int64(len(abortSent)), log.arrived); s.end != "" {
				break
			}
			log.served.Add(1)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(abortReply))
			if _, err := c.Write(abortReply); err != nil {
				s.writeEnd = endKind(err)
				break
			}
		}
		log.put(c, s)
	})
	l := e.listenerTo("abort_mid_body_http1", portAbortHTTP1, netip.MustParseAddrPort(be))
	l.Protocol, l.Pool = "http1", PoolOpts{Warm: "0", MaxConns: "1"}
	return l
}

// runAbortHTTP1: the proxy knows the request is incomplete: the record
// says client_aborted (client_reset admitted after the client's RST), the
// backend reads the 10 bytes and then an RST, never EOF, and its
// connection is released: with pool.max_conns 1, the whole requests that
// follow are all served. Placements are left to agreement with the kernel.
func runAbortHTTP1(t *testing.T, e *pairEnv) cellOut {
	addr, log := e.listen(portAbortHTTP1), e.sawLog("abort_mid_body_http1")
	clientsAt := map[string]aborted{}
	for i := range abortConns {
		local, at := abortOne(t, e, addr, log, i%2 == 1)
		clientsAt[local] = aborted{i%2 == 1, at}
	}
	whole := map[string]bool{}
	for range abortNormal {
		whole[wholeRequest(t, e, addr)] = true
	}
	recs := waitListenerRecords(t, e.main, "abort_mid_body_http1", abortConns+abortNormal, 20*time.Second)
	if got := log.served.Load(); got != abortNormal {
		t.Errorf("the backend answered %d whole requests, want %d", got, abortNormal)
	}
	// A whole request may come from the port of an aborted one (the
	// connections are sequential): the later session, the higher id.
	latest := map[string]float64{}
	for _, r := range recs {
		latest[r.Str("front.peer")] = max(latest[r.Str("front.peer")], r.Num("id"))
	}
	for _, r := range recs {
		a, ok := clientsAt[r.Str("front.peer")]
		if !ok || whole[r.Str("front.peer")] && r.Num("id") == latest[r.Str("front.peer")] {
			requireOutcome(t, []Record{r}, "ok")
			continue
		}
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		o := r.Str("outcome")
		if (o != "client_aborted" && !(a.rst && o == "client_reset")) || r["back.cut"] != true || be.end != "reset" || be.in != int64(len(abortSent)) {
			t.Errorf("record %v (client reset %v): outcome %q, back.cut %v; the backend read %d body bytes, then %q; want client_aborted, cut, %d bytes, then an RST",
				r["id"], a.rst, o, r["back.cut"], be.in, be.end, len(abortSent))
		}
		if took := be.at.Sub(a.at); took > 2*time.Second {
			t.Errorf("record %v: the backend's connection ended %v after the client's, want promptly", r["id"], took)
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9088)}, want: certain("", "")}
}

// wholeRequest sends a whole request on its own connection and checks the
// answer, then closes; it returns the connection's local address.
func wholeRequest(t testing.TB, e *pairEnv, addr netip.AddrPort) string {
	t.Helper()
	c, err := dialFrom(t, e.topo.LB, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := strings.Replace(abortHead, "/upload", "/whole", 1) + strings.Repeat("x", abortBody)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("whole request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("whole request after the aborted ones: %v", err)
	}
	n, sum, end := hashAll(resp.Body)
	if resp.StatusCode != 200 || n != int64(len(abortReply)) || sum != sumOf(abortReply) {
		t.Errorf("whole request after the aborted ones: status %d, %d bytes (sum ok %v, %s); want 200 and the reply",
			resp.StatusCode, n, sum == sumOf(abortReply), end)
	}
	c.Close()
	return c.LocalAddr().String()
}
