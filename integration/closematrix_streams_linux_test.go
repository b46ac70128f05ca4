package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The matrix's cells with the test's own peers: clients that half-close,
// pause and upload, and Go backends that read to EOF, answer at once or
// half-close first. Each side hashes what it read; what each saw is joined
// to its record by address (front.peer is the client's, back.local the
// address the backend saw).

const (
	portHalfClose = 8084
	portUpload    = 8086
)

// saw is what one end of a connection saw: bytes read and their SHA-256,
// how reading ended (endKind), bytes written and how writing ended ("" if
// it did not fail), and when it was over.
type saw struct {
	addr     string // the end's peer address as the other side names it
	in       int64
	sum      string
	end      string
	wrote    int64
	writeEnd string
	at       time.Time
	took     time.Duration // how long the client waited, where it matters
}

// send writes b to c, noting how much went out and how a failed write
// ended.
func (s *saw) send(c *net.TCPConn, b []byte) error {
	k, err := c.Write(b)
	s.wrote += int64(k)
	if err != nil {
		s.writeEnd = endKind(err)
	}
	return err
}

// halfClosingClient is a client that sends req, half-closes, waits pause
// (a reader that pauses, when not 0) and reads to the end.
func halfClosingClient(req []byte, pause time.Duration) func(c *net.TCPConn) saw {
	return func(c *net.TCPConn) saw {
		var s saw
		if s.send(c, req) == nil {
			if err := c.CloseWrite(); err != nil {
				s.writeEnd = endKind(err)
			}
		}
		if pause > 0 {
			time.Sleep(pause) // the paused reader under test, not a synchronisation
		}
		s.in, s.sum, s.end = hashAll(c)
		return s
	}
}

// sawLog collects what a scripted backend saw, by the address of the
// proxy's end (the record's back.local). Backends that serve requests
// count those answered whole (served) and say when a request's first
// bytes arrived (arrived), for clients that act once they did.
type sawLog struct {
	saws    awaitMap[string, saw]
	served  atomic.Int64
	arrived chan struct{}
}

func newSawLog() *sawLog {
	return &sawLog{arrived: make(chan struct{}, 64)}
}

// put notes what the backend saw on c.
func (l *sawLog) put(c net.Conn, s saw) {
	s.addr, s.at = c.RemoteAddr().String(), time.Now()
	l.saws.put(s.addr, s)
}

// wait returns what the backend saw on the connection from addr, waiting
// for it up to timeout: a record is written when the proxy closed its
// sockets, which may be before the backend finished.
func (l *sawLog) wait(t testing.TB, addr string, timeout time.Duration) (saw, bool) {
	t.Helper()
	s, ok := l.find(addr, timeout)
	if !ok {
		t.Errorf("the backend reported nothing on the connection from %s after %v", addr, timeout)
	}
	return s, ok
}

// find is wait without the error: false when nothing came by timeout.
func (l *sawLog) find(addr string, timeout time.Duration) (saw, bool) {
	return l.saws.find(addr, timeout)
}

// awaitMap is a map whose readers can wait for a key to be put: what a
// scripted backend saw comes when its connection ended, which may be
// after the record that names it. The zero value is ready to use.
type awaitMap[K comparable, V any] struct {
	mu      sync.Mutex
	m       map[K]V
	changed chan struct{} // closed and replaced at each put
}

// changedLocked returns the channel the next put closes.
func (a *awaitMap[K, V]) changedLocked() chan struct{} {
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.changed
}

func (a *awaitMap[K, V]) put(k K, v V) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[K]V{}
	}
	a.m[k] = v
	close(a.changedLocked())
	a.changed = make(chan struct{})
}

// find returns the value put for k, waiting for it up to timeout.
func (a *awaitMap[K, V]) find(k K, timeout time.Duration) (V, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		v, ok := a.m[k]
		changed := a.changedLocked()
		a.mu.Unlock()
		if ok {
			return v, true
		}
		select {
		case <-changed:
		case <-timer.C:
			return v, false
		}
	}
}

// endKind names how a read or write ended: eof (a clean end), reset
// (ECONNRESET: the peer's RST), pipe (EPIPE), timeout, or the error.
func endKind(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}

// hashAll reads r to its end and returns the bytes read, their SHA-256
// and how reading ended.
func hashAll(r io.Reader) (int64, string, string) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, hex.EncodeToString(h.Sum(nil)), endKind(err)
}

// hashAllTelling is hashAll that closes reached once at bytes were read.
func hashAllTelling(r io.Reader, at int64, reached chan<- struct{}) (int64, string, string) {
	h := sha256.New()
	n, err := io.CopyN(h, r, at)
	if err == nil {
		close(reached)
		var m int64
		m, err = io.Copy(h, r)
		n += m
	}
	return n, hex.EncodeToString(h.Sum(nil)), endKind(err)
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// endedWell says whether a stream's reader, which got every byte, ended
// as the record allows: EOF, or ECONNRESET after a safe reset (the leg's
// close is reset, nothing cut), since Linux hands over the bytes already
// received before the reset.
func endedWell(end string, r Record, leg string) bool {
	return end == "eof" || (end == "reset" && r.Str(leg+".close") == "reset" && r[leg+".cut"] == false)
}

// requireRecordedBytes checks a record's byte counts against what its
// client (cl) and backend (be) saw. Each way, bytes can only be lost on
// the way, never made: the receiving peer read no more than the proxy
// sent it, which is no more than the proxy read from the other peer,
// which is no more than that peer wrote. A stream that ended whole
// (whole) has all four equal: the record counts every byte that moved.
func requireRecordedBytes(t testing.TB, r Record, cl, be saw, whole bool) {
	t.Helper()
	if msg := recordedBytes(r, cl, be, whole); msg != "" {
		t.Errorf("record %v: %s\n%s", r["id"], msg, legs(r))
	}
}

// recordedBytes is requireRecordedBytes's check: what is wrong with the
// record's byte counts, the first way that is wrong, or "".
func recordedBytes(r Record, cl, be saw, whole bool) string {
	for _, c := range []struct {
		way    string
		counts [4]float64
	}{
		{"down (client read ≤ front.bytes_out ≤ back.bytes_in ≤ backend wrote)",
			[4]float64{float64(cl.in), r.Num("front.bytes_out"), r.Num("back.bytes_in"), float64(be.wrote)}},
		{"up (backend read ≤ back.bytes_out ≤ front.bytes_in ≤ client wrote)",
			[4]float64{float64(be.in), r.Num("back.bytes_out"), r.Num("front.bytes_in"), float64(cl.wrote)}},
	} {
		for i := 1; i < len(c.counts); i++ {
			if c.counts[i-1] > c.counts[i] || whole && c.counts[i-1] != c.counts[i] {
				return fmt.Sprintf("RECORD BYTES: %s: %v (whole %v)", c.way, c.counts, whole)
			}
		}
	}
	return ""
}

// legs renders what a record says of its legs, for failure messages.
func legs(r Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "record %v: outcome %q error %q duration_ms %v", r["id"], r.Str("outcome"), r.Str("error"), r.Num("duration_ms"))
	for _, l := range []string{"front", "back"} {
		fmt.Fprintf(&b, "\n  %s: first_fin %q close %q time_wait %q target %q reason %q cut %v bytes in %v out %v fin_in_ms %v fin_out_ms %v rst_out_ms %v",
			l, r.Str(l+".first_fin"), r.Str(l+".close"), r.Str(l+".time_wait"), r.Str(l+".target"), r.Str(l+".reason"), r[l+".cut"],
			r.Num(l+".bytes_in"), r.Num(l+".bytes_out"), r.Num(l+".fin_in_ms"), r.Num(l+".fin_out_ms"), r.Num(l+".rst_out_ms"))
	}
	return b.String()
}

// clients runs n clients at once, each with its own connection to addr
// from lb, and returns what each saw (addr is its local address, the
// record's front.peer). A failing client reports with t.Errorf.
func clients(t testing.TB, e *pairEnv, addr netip.AddrPort, n int, f func(c *net.TCPConn) saw) map[string]saw {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]saw{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := dialFrom(t, e.topo.LB, addr.String())
			if err != nil {
				t.Errorf("client: %v", err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			s := f(c)
			s.addr, s.at = c.LocalAddr().String(), time.Now()
			c.Close()
			mu.Lock()
			seen[s.addr] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return seen
}

// Half-close with a backend that reads to EOF: the client sends its
// upload and shuts down writing; the backend reads to EOF, then answers 4
// MB and closes; the client reads to EOF.
const (
	halfCloseUp   = 1 << 20
	halfCloseDown = 4 << 20
)

func halfCloseListener(t testing.TB, e *pairEnv) ListenerOpts {
	log, up, down := e.sawLog("halfclose_eof_backend"), sumOf(blob(halfCloseUp)), blob(halfCloseDown)
	be := scriptBackend(t, e.topo.Web, e.webAt(9084).String(), func(c *net.TCPConn) {
		s := saw{}
		s.in, s.sum, s.end = hashAll(c)
		if s.end == "eof" && s.sum == up {
			s.send(c, down)
		}
		log.put(c, s)
	})
	return e.listenerTo("halfclose_eof_backend", portHalfClose, netip.MustParseAddrPort(be))
}

// runHalfClose: the front leg ends client-first (clientEnds). The back leg
// ends proxy-first toward a backend that sent nothing yet: it may be (it
// is) waiting for EOF, so every target passes the FIN on (rule 1) and the
// proxy holds the back leg's TIME-WAIT; targets other than proxy record
// peer_may_await_eof. The backend must see EOF, never an RST.
func runHalfClose(t *testing.T, e *pairEnv) cellOut {
	const n = 4
	addr := e.listen(portHalfClose)
	up := blob(halfCloseUp)
	seen := clients(t, e, addr, n, halfClosingClient(up, 0))
	recs := waitListenerRecords(t, e.main, "halfclose_eof_backend", n, 20*time.Second)
	requireOutcome(t, recs, "ok")
	log, down := e.sawLog("halfclose_eof_backend"), sumOf(blob(halfCloseDown))
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		if cl.in != halfCloseDown || cl.sum != down || cl.writeEnd != "" || !endedWell(cl.end, r, "front") {
			t.Errorf("record %v: the client read %d bytes (sum ok %v), ended %q, wrote %q; want %d and its SHA-256",
				r["id"], cl.in, cl.sum == down, cl.end, cl.writeEnd, halfCloseDown)
		}
		if be.in != halfCloseUp || be.end != "eof" || be.wrote != halfCloseDown {
			t.Errorf("record %v: the backend read %d bytes (sum ok %v) ending in %q, then wrote %d (%s); want the whole upload, EOF, the answer",
				r["id"], be.in, be.sum == sumOf(up), be.end, be.wrote, be.writeEnd)
		}
		requireRecordedBytes(t, r, cl, be, true)
		if e.pair.back != "proxy" && r.Str("back.reason") != "peer_may_await_eof" {
			t.Errorf("record %v: back.reason %q, want peer_may_await_eof (target %s, a backend reading to EOF)", r["id"], r.Str("back.reason"), e.pair.back)
		}
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9084)},
		want: certain(clientEnds(e.pair.front), "proxy")}
}

// Upload after the server's half-close: the backend reads the first MB of
// a 16 MB upload, sends 1 MB and shuts down writing, then reads the rest
// to its end. The client sends 4 MB, and the rest only once it has the
// 1 MB (and, where the proxy's FIN follows the backend's at once, its
// EOF): so the backend's half-close always comes while the client is
// still uploading. It half-closes once the upload is sent.
const (
	uploadUp    = 16 << 20
	uploadFirst = 1 << 20
	uploadHold  = 4 << 20
	uploadDown  = 1 << 20
)

// uploadClient sends up, holding back all but its first uploadHold bytes
// until it has the backend's answer (and with awaitEOF its end), reading
// the answer meanwhile.
func uploadClient(c *net.TCPConn, up []byte, awaitEOF bool) saw {
	var s saw
	got, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		s.in, s.sum, s.end = hashAllTelling(c, uploadDown, got)
	}()
	k, err := c.Write(up[:uploadHold])
	wrote := int64(k)
	if err == nil {
		select {
		case <-got:
		case <-ended:
		}
		if awaitEOF {
			<-ended
		}
		if k, err = c.Write(up[uploadHold:]); err == nil {
			err = c.CloseWrite()
		}
		wrote += int64(k)
	}
	<-ended
	s.wrote = wrote // after the reader's last write of s
	if err != nil {
		s.writeEnd = endKind(err)
	}
	return s
}

func uploadListener(t testing.TB, e *pairEnv) ListenerOpts {
	log, down := e.sawLog("upload_after_server_halfclose"), blob(uploadDown)
	be := scriptBackend(t, e.topo.Web, e.webAt(9086).String(), func(c *net.TCPConn) {
		h := sha256.New()
		var s saw
		first, err := io.CopyN(h, c, uploadFirst)
		if err == nil {
			k, werr := c.Write(down)
			s.wrote = int64(k)
			if werr == nil {
				werr = c.CloseWrite()
			}
			if werr != nil {
				s.writeEnd = endKind(werr)
			}
			var rest int64
			rest, err = io.Copy(h, c)
			first += rest
		}
		s.in, s.sum, s.end = first, hex.EncodeToString(h.Sum(nil)), endKind(err)
		log.put(c, s)
	})
	return e.listenerTo("upload_after_server_halfclose", portUpload, netip.MustParseAddrPort(be))
}

// runUpload: the back leg ends backend-first (its FIN second leaves
// TIME-WAIT on the backend; nowhere resets). The front leg ends
// proxy-first while the client uploads: target proxy (and auto, which
// prefers the proxy) sends its FIN at once, TIME-WAIT on the proxy; client
// and nowhere withhold it from a client that is not silent, unless its
// upload was blocked (by the backend) when the backend's FIN came through
// (rule 1): left to agreement with the kernel.
func runUpload(t *testing.T, e *pairEnv) cellOut {
	const n = 2
	addr := e.listen(portUpload)
	up := blob(uploadUp)
	awaitEOF := e.pair.front == "proxy" || e.pair.front == "auto" // the proxy's FIN goes first
	seen := clients(t, e, addr, n, func(c *net.TCPConn) saw { return uploadClient(c, up, awaitEOF) })
	recs := waitListenerRecords(t, e.main, "upload_after_server_halfclose", n, 20*time.Second)
	requireOutcome(t, recs, "ok")
	log, down, upSum := e.sawLog("upload_after_server_halfclose"), sumOf(blob(uploadDown)), sumOf(up)
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		if cl.in != uploadDown || cl.sum != down || cl.writeEnd != "" || !endedWell(cl.end, r, "front") {
			t.Errorf("record %v: the client read %d bytes (sum ok %v) ending in %q, its upload ended %q; want %d and its SHA-256",
				r["id"], cl.in, cl.sum == down, cl.end, cl.writeEnd, uploadDown)
		}
		if be.in != uploadUp || be.sum != upSum || !endedWell(be.end, r, "back") || be.wrote != uploadDown || be.writeEnd != "" {
			t.Errorf("record %v: the backend read %d bytes (sum ok %v) ending in %q, wrote %d (%s); want the %d-byte upload whole",
				r["id"], be.in, be.sum == upSum, be.end, be.wrote, be.writeEnd, uploadUp)
		}
		requireRecordedBytes(t, r, cl, be, true)
	}
	front := map[string]string{"proxy": "proxy", "auto": "proxy"}[e.pair.front]
	back := "backend"
	if e.pair.back == "nowhere" {
		back = "none"
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(9086)}, want: certain(front, back)}
}
