package integration

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The matrix's cells where one peer pauses while the proxy's FIN toward
// the other is due: a client that stops reading (the proxy's buffers fill:
// not silence, rule 2) and a backend that stops writing mid-stream on its
// own (silence: whatever the policy bets on it, a stream it cuts short
// reaches the client as an RST and is recorded as cut, rule 4).

const (
	portPaused        = 8085
	portPausing       = 8091
	portUploadPausing = 8092
)

// Half-close with a paused reader: the client sends its request and shuts
// down writing; the backend answers 8 MB at once and closes, while the
// client reads nothing for pausedFor, longer than peer_fin_grace: a grace
// must not count the backend's blocked writes as silence (rule 2).
const (
	pausedRequest = "GET /paused HTTP/1.1\r\nHost: web\r\n\r\n"
	pausedDown    = 8 << 20
	pausedFor     = 3 * time.Second
)

func pausedListener(t testing.TB, e *pairEnv) ListenerOpts {
	log, down := e.sawLog("halfclose_paused_reader"), blob(pausedDown)
	be := scriptBackend(t, e.topo.Web, e.webAt(9085).String(), func(c *net.TCPConn) {
		req := make([]byte, len(pausedRequest))
		var s saw
		if _, err := io.ReadFull(c, req); err != nil || string(req) != pausedRequest {
			s.end = "bad request: " + endKind(err)
			log.put(c, s)
			return
		}
		s.in = int64(len(req))
		s.send(c, down)
		log.put(c, s)
	})
	return e.listenerTo("halfclose_paused_reader", portPaused, netip.MustParseAddrPort(be))
}

// runPaused: the front leg ends client-first (clientEnds); the back leg
// is proxy-first, and only target proxy is certain (its FIN leaves at once,
// long before the backend's); the others depend on whether the backend
// answered before the client's FIN reached the proxy.
func runPaused(t *testing.T, e *pairEnv) cellOut {
	const n = 2
	addr := e.listen(portPaused)
	seen := clients(t, e, addr, n, halfClosingClient([]byte(pausedRequest), pausedFor))
	recs := waitListenerRecords(t, e.main, "halfclose_paused_reader", n, 20*time.Second)
	requireOutcome(t, recs, "ok")
	log, down := e.sawLog("halfclose_paused_reader"), sumOf(blob(pausedDown))
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		if cl.in != pausedDown || cl.sum != down || cl.writeEnd != "" || !endedWell(cl.end, r, "front") {
			t.Errorf("record %v: the paused client read %d bytes (sum ok %v) ending in %q; want %d and its SHA-256\n%s",
				r["id"], cl.in, cl.sum == down, cl.end, pausedDown, legs(r))
		}
		if be.wrote != pausedDown || be.writeEnd != "" {
			t.Errorf("record %v: the backend wrote %d of %d bytes (%s)", r["id"], be.wrote, pausedDown, be.writeEnd)
		}
		requireRecordedBytes(t, r, cl, be, true)
	}
	back := ""
	if e.pair.back == "proxy" {
		back = "proxy"
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9085)},
		want: certain(clientEnds(e.pair.front), back)}
}

// Half-close with a backend that pauses mid-stream: the client sends its
// request and half-closes at once, then reads; the backend sends half its
// answer, stops for pausingFor, sends the rest and closes. The pause
// outlasts peer_fin_grace, so that whatever grace the proxy adapted, a
// target that withholds its FIN sees it run out. The client closed before
// the answer began, so it still reads: a grace must not end the backend's
// stream by a reset (rule 3), the FIN goes instead and nothing is cut.
// (A client that half-closes midway through an answer whose rest already
// sits in its buffer looks, to the proxy, like one that closed once it had
// the whole answer: that case is the bet the README names.)
const (
	pausingRequest = "GET /pausing HTTP/1.1\r\nHost: web\r\n\r\n"
	pausingHalf    = 256 << 10
	pausingFor     = matrixGrace + 500*time.Millisecond
	pausingStart   = 150 * time.Millisecond
)

func pausingListener(t testing.TB, e *pairEnv) ListenerOpts {
	log, down := e.sawLog("halfclose_pausing_backend"), blob(2*pausingHalf)
	be := scriptBackend(t, e.topo.Web, e.webAt(9091).String(), func(c *net.TCPConn) {
		req := make([]byte, len(pausingRequest))
		var s saw
		if _, err := io.ReadFull(c, req); err != nil || string(req) != pausingRequest {
			s.end = "bad request: " + endKind(err)
			log.put(c, s)
			return
		}
		s.in = int64(len(req))
		// The answer starts a little after the request, so that the
		// client's half-close, sent right after it, surely comes first.
		time.Sleep(pausingStart) // the backend's think time, not a synchronisation
		if s.send(c, down[:pausingHalf]) == nil {
			time.Sleep(pausingFor) // the backend's own pause under test, not a synchronisation
			s.send(c, down[pausingHalf:])
		}
		log.put(c, s)
	})
	return e.listenerTo("halfclose_pausing_backend", portPausing, netip.MustParseAddrPort(be))
}

// runPausing: the back leg ends proxy-first; the backend may be waiting for
// EOF, and targets other than proxy withhold the FIN for the probe, then
// (the backend answered) for a grace of its silence. Its pause is silence,
// but the client still reads: the grace ends with a FIN, never a reset,
// and the client reads the whole answer. Were a stream cut anyway, rule 4
// says the client must read an RST, never a clean end, and the record say
// cut (outcome not ok): either the whole answer, or that.
func runPausing(t *testing.T, e *pairEnv) cellOut {
	const n = 2
	addr := e.listen(portPausing)
	seen := clients(t, e, addr, n, halfClosingClient([]byte(pausingRequest), 0))
	recs := waitListenerRecords(t, e.main, "halfclose_pausing_backend", n, 20*time.Second)
	down, log := sumOf(blob(2*pausingHalf)), e.sawLog("halfclose_pausing_backend")
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		whole := cl.in == 2*pausingHalf && cl.sum == down && cl.writeEnd == ""
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		requireRecordedBytes(t, r, cl, be, whole)
		switch {
		case whole && endedWell(cl.end, r, "front") && r.Str("outcome") == "ok":
		case !whole && cl.end == "reset" && r["front.cut"] == true && r.Str("outcome") != "ok":
			t.Logf("record %v: the answer was cut after %d of %d bytes, and said so (RST, cut, outcome %s)", r["id"], cl.in, 2*pausingHalf, r.Str("outcome"))
		case !whole && e.loss != nil && r.Str("back.reason") == "grace_expired" && r.Str("back.close") == "reset" &&
			lostOn(lostAtProxy(t, e.topo), r, "front"):
			// The grace's bet lost (docs/guarantees.md, known gaps): the
			// client's FIN, sent before the answer and lost, came again
			// after its first bytes, acknowledging them, as from a client
			// that closed once it had the answer.
			t.Logf("record %v: the client read %d of %d bytes, a clean end: its FIN, lost, came again after the answer began, and the grace's bet took it for the end",
				r["id"], cl.in, 2*pausingHalf)
		default:
			t.Errorf("the client read %d of %d bytes (sum ok %v) ending in %q: a stream cut short must reach the client as an RST and be recorded as cut (rule 4)\n%s",
				cl.in, 2*pausingHalf, cl.sum == down, cl.end, legs(r))
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9091)}, want: certain("", "")}
}

// An upload that pauses after the server's half-close: the client sends
// half its upload and reads the backend's short answer, sends a little
// more (on which the backend shuts down writing), stops for pausingFor,
// and sends the rest; the backend reads the upload to its end. The mirror
// of the pausing backend, on the front leg.
const (
	pausingUpHalf = 256 << 10
	pausingAnswer = 64 << 10
	pausingMore   = 64 << 10 // sent on the answer, before the pause
)

func uploadPausingListener(t testing.TB, e *pairEnv) ListenerOpts {
	log, answer := e.sawLog("upload_pausing_after_server_halfclose"), blob(pausingAnswer)
	be := scriptBackend(t, e.topo.Web, e.webAt(9092).String(), func(c *net.TCPConn) {
		first := make([]byte, pausingUpHalf+pausingMore)
		var s saw
		if _, err := io.ReadFull(c, first[:pausingUpHalf]); err != nil {
			s.end = "first half: " + endKind(err)
			log.put(c, s)
			return
		}
		k, err := c.Write(answer)
		more := 0
		if err == nil {
			more, err = io.ReadFull(c, first[pausingUpHalf:])
		}
		if err == nil {
			err = c.CloseWrite()
		}
		s.wrote = int64(k)
		if err != nil {
			s.writeEnd = endKind(err)
		}
		s.in, s.sum, s.end = hashAll(io.MultiReader(bytes.NewReader(first[:pausingUpHalf+more]), c))
		log.put(c, s)
	})
	return e.listenerTo("upload_pausing_after_server_halfclose", portUploadPausing, netip.MustParseAddrPort(be))
}

// pausingUploader sends up in three parts: half, a little more once it
// has the answer, and after a pause the rest; then reads to the end.
func pausingUploader(c *net.TCPConn, up []byte) saw {
	var s saw
	answer := make([]byte, pausingAnswer)
	got := 0
	err := s.send(c, up[:pausingUpHalf])
	if err == nil {
		got, err = io.ReadFull(c, answer)
	}
	if err == nil {
		err = s.send(c, up[pausingUpHalf:pausingUpHalf+pausingMore])
	}
	if err == nil {
		time.Sleep(pausingFor) // the client's own pause under test, not a synchronisation
		if err = s.send(c, up[pausingUpHalf+pausingMore:]); err == nil {
			err = c.CloseWrite()
		}
	}
	if err != nil {
		s.writeEnd = endKind(err)
	}
	rest, _, end := hashAll(c)
	s.in, s.sum, s.end = int64(got)+rest, sumOf(answer[:got]), end
	return s
}

// runUploadPausing: the front leg ends proxy-first while the client is
// sending (it sent since the answer), so targets client and nowhere
// withhold the FIN for a grace of its silence, and the client pauses. If the proxy bets on the pause and resets the client, the rest
// of the upload is lost, and rule 4 says the backend must then read an RST,
// never a clean end, and the record say cut. Either the backend reads the
// whole upload, or that.
func runUploadPausing(t *testing.T, e *pairEnv) cellOut {
	const n = 2
	addr, up := e.listen(portUploadPausing), blob(2*pausingUpHalf)
	seen := clients(t, e, addr, n, func(c *net.TCPConn) saw { return pausingUploader(c, up) })
	recs := waitListenerRecords(t, e.main, "upload_pausing_after_server_halfclose", n, 20*time.Second)
	log, upSum := e.sawLog("upload_pausing_after_server_halfclose"), sumOf(up)
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		whole := be.in == int64(len(up)) && be.sum == upSum
		switch {
		case whole && endedWell(be.end, r, "back") && cl.writeEnd == "" && r.Str("outcome") == "ok":
		case !whole && be.end == "reset" && r["back.cut"] == true && r.Str("outcome") != "ok":
			t.Logf("record %v: the upload was cut after %d of %d bytes, and said so (RST, cut, outcome %s)", r["id"], be.in, len(up), r.Str("outcome"))
		default:
			t.Errorf("the backend read %d of %d bytes (sum ok %v) ending in %q, the client's upload ended %q: an upload cut short must reach the backend as an RST and be recorded as cut (rule 4)\n%s",
				be.in, len(up), be.sum == upSum, be.end, cl.writeEnd, legs(r))
		}
		if cl.in != pausingAnswer {
			t.Errorf("record %v: the client read %d bytes, want the %d-byte answer and no more", r["id"], cl.in, pausingAnswer)
		}
		requireRecordedBytes(t, r, cl, be, whole && cl.in == pausingAnswer)
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9092)}, want: certain("", "")}
}
