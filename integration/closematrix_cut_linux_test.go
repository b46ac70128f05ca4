package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The matrix's cells that end sessions by force, each with its own
// closeproxy: an idle timeout (and the descriptors it must give back) and
// a drain on SIGTERM. Every stream they cut must reach its peer as an RST,
// never a clean EOF (rule 4), and both legs must end together (rule 5).

const (
	portTimeout = 8089
	portDrain   = 8090
	matrixIdle  = time.Second
)

// runTimeout: a backend that reads the request and never answers, and a
// client that sends nothing to a backend that waits for a request. With
// idle_timeout 1s both legs end within about a second (idle is measured
// to within a quarter), each peer reading an RST; the record says timeout
// with both legs cut; closeproxy's descriptors are back to where they
// were. No TIME-WAIT anywhere.
func runTimeout(t *testing.T, e *pairEnv) cellOut {
	const n = 6 // every other client is silent
	log := e.sawLog("timeout")
	be := scriptBackend(t, e.topo.Web, e.webAt(9089).String(), func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		var s saw
		err := readHeadLines(br)
		if err == nil {
			_, err = io.Copy(io.Discard, br)
		}
		s.end = endKind(err)
		log.put(c, s)
	})
	l := e.listenerTo("timeout", portTimeout, netip.MustParseAddrPort(be))
	l.IdleTimeout, l.Pool = matrixIdle.String(), PoolOpts{Warm: "0"}
	cp := startCloseproxy(t, e.topo, e.topo.Proxy, closeproxyConfigWith(GlobalOpts{AdminListen: "off"}, l))
	base := fdCount(t, cp.Pid())
	var k atomic.Int32
	seen := clients(t, e, e.listen(portTimeout), n, func(c *net.TCPConn) saw {
		var s saw
		start := time.Now()
		if k.Add(1)%2 == 0 {
			s.wrote = int64(len(pausedRequest))
			if _, err := io.WriteString(c, pausedRequest); err != nil {
				s.writeEnd = endKind(err)
			}
		}
		s.in, _, s.end = hashAll(c)
		s.took = time.Since(start)
		return s
	})
	recs := waitListenerRecords(t, cp, "timeout", n, 10*time.Second)
	checkTimedOut(t, recs, seen, log)
	waitFDs(t, cp.Pid(), base, 5*time.Second)
	return cellOut{cp: cp, recs: recs, scope: []netip.AddrPort{e.listen(portTimeout), e.webAt(9089)}, want: certain("none", "none")}
}

// checkTimedOut: each client read an RST within 2.5 × idle_timeout, the
// backend one at about the same time, and the record says timeout with
// both legs cut, after idle_timeout.
func checkTimedOut(t testing.TB, recs []Record, seen map[string]saw, log *sawLog) {
	t.Helper()
	for _, r := range recs {
		cl := seen[r.Str("front.peer")]
		be, _ := log.wait(t, r.Str("back.local"), 5*time.Second)
		if cl.end != "reset" || cl.took > 5*matrixIdle/2 {
			t.Errorf("record %v (client sent %d bytes): the client's read ended %q after %v; want an RST within 2.5 × idle_timeout %v",
				r["id"], cl.wrote, cl.end, cl.took.Round(time.Millisecond), matrixIdle)
		}
		if ms := r.Num("duration_ms"); r.Str("outcome") != "timeout" || r["front.cut"] != true || r["back.cut"] != true ||
			ms < float64(matrixIdle.Milliseconds()) || ms > 2.5*float64(matrixIdle.Milliseconds()) {
			t.Errorf("record %v: outcome %q, front.cut %v, back.cut %v, duration_ms %v; want timeout, both cut, after idle_timeout %v and within 2.5×",
				r["id"], r.Str("outcome"), r["front.cut"], r["back.cut"], ms, matrixIdle)
		}
		if d := be.at.Sub(cl.at); be.end != "reset" || d > time.Second || d < -time.Second {
			t.Errorf("record %v: the backend's read ended %q, %v from the client's; want an RST, together (rule 5)", r["id"], be.end, d.Round(time.Millisecond))
		}
	}
}

// waitFDs polls (only /proc knows) until process pid holds at most base
// descriptors, failing after timeout.
func waitFDs(t testing.TB, pid, base int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := fdCount(t, pid)
		if got <= base {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("closeproxy holds %d descriptors %v after its sessions ended, %d before them: %v", got, timeout, base, fdKinds(t, pid))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The drain cell's transfers: a slow download with the client's side
// open, the same after the client's half-close, and a slow upload. Each
// needs far longer than shutdown_timeout.
var drainKinds = []string{"down", "down_halfclosed", "up"}

const (
	drainChunk    = 64 << 10
	drainPace     = 20 * time.Millisecond // a slow peer: 64 KiB per 20 ms
	drainFlowing  = 256 << 10             // bytes moved before SIGTERM
	drainShutdown = time.Second
	// drainFirst is how long a download's backend waits before it
	// answers. With back time_wait "backend" (or auto choosing it) and
	// adaptive_grace, a half-closed client whose FIN the proxy handles
	// after an answer that came at once looks done reading, and the
	// backend's first drainPace pause outlasts its grace (four times its
	// longest pause so far, at least policy.MinSilence, 10 ms): both legs
	// end with a safe reset, record ok. That is the grace's bet, not what
	// the cell is about, and the FIN following the request by microseconds
	// kept it off only by timing. A first pause of 40 ms makes every grace
	// at least 160 ms, whenever the FIN is handled.
	drainFirst = 40 * time.Millisecond
)

// drainBackend serves GET /down slowly (a length it never reaches) after
// drainFirst, and reads POST /up to its end, saying on log.arrived once
// drainFlowing bytes arrived.
func drainBackend(log *sawLog) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		var s saw
		line, err := br.ReadString('\n')
		if err == nil {
			err = readHeadLines(br)
		}
		switch {
		case err != nil:
			s.end = "head: " + endKind(err)
		case strings.Contains(line, "/down"):
			time.Sleep(drainFirst) // the backend's first pause, not a synchronisation
			s.wrote, s.writeEnd = paced(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<30))
		default:
			s.in, s.end = readBody(br, 1<<30, drainFlowing, log.arrived)
		}
		log.put(c, s)
	}
}

// paced writes head, then chunks at drainPace until a write fails or 30 s
// passed; it returns the bytes written and how writing ended.
func paced(c *net.TCPConn, head string) (int64, string) {
	chunk := make([]byte, drainChunk)
	n, err := io.WriteString(c, head)
	wrote := int64(n)
	for i := 0; err == nil && i < int(30*time.Second/drainPace); i++ {
		n, err = c.Write(chunk)
		wrote += int64(n)
		time.Sleep(drainPace) // the slow sender under test, not a synchronisation
	}
	if err == nil {
		return wrote, "still writing after 30s"
	}
	return wrote, endKind(err)
}

// runDrain: SIGTERM with shutdown_timeout 1s while every transfer needs
// many seconds more. Every client reads an RST, never a clean early EOF;
// every record says drained with the front leg cut (and the back leg too
// where the client's stream was still flowing); closeproxy exits 0 within
// shutdown_timeout and a few seconds. No TIME-WAIT anywhere.
func runDrain(t *testing.T, e *pairEnv) cellOut {
	log := e.sawLog("drain")
	be := scriptBackend(t, e.topo.Web, e.webAt(9090).String(), drainBackend(log))
	l := e.listenerTo("drain", portDrain, netip.MustParseAddrPort(be))
	l.Pool = PoolOpts{Warm: "0"}
	cp := startCloseproxy(t, e.topo, e.topo.Proxy, closeproxyConfigWith(
		GlobalOpts{AdminListen: "off", ShutdownTimeout: drainShutdown.String()}, l))
	flowing := make(chan struct{}, 2*len(drainKinds))
	kinds, wait := startDrainClients(t, e, flowing)
	awaitFlowing(t, cp, flowing, log.arrived)
	term := time.Now()
	cp.Signal(t, syscall.SIGTERM)
	if err := cp.Wait(t, drainShutdown+5*time.Second); err != nil {
		t.Errorf("closeproxy after SIGTERM: %v, want exit status 0", err)
	}
	if took := time.Since(term); took > drainShutdown+3*time.Second {
		t.Errorf("closeproxy exited %v after SIGTERM, want within shutdown_timeout %v and 3 s", took, drainShutdown)
	}
	seen := wait()
	recs := waitListenerRecords(t, cp, "drain", 2*len(drainKinds), 5*time.Second)
	var lost func(Record) bool // a backend that never heard the proxy's RST
	if e.loss != nil {
		lost = func(r Record) bool {
			return resetsSent(t, e.topo, e.topo.Proxy)[tuple{r.Str("back.local"), r.Str("back.peer")}]
		}
	}
	checkDrained(t, recs, kinds, seen, log, lost)
	return cellOut{cp: cp, recs: recs, scope: []netip.AddrPort{e.listen(portDrain), e.webAt(9090)}, want: certain("none", "none")}
}

// awaitFlowing waits until every transfer moved drainFlowing bytes: the
// downloads say so on flowing, the backend of each upload on arrived. None
// may end before SIGTERM: each needs far longer.
func awaitFlowing(t testing.TB, cp *Closeproxy, flowing, arrived <-chan struct{}) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for n := 0; n < 2*len(drainKinds); {
		recs, changed := cp.log.teardowns()
		if len(recs) > 0 {
			t.Fatalf("a transfer ended before SIGTERM, long before its end:\n%s", legs(recs[0]))
		}
		select {
		case <-flowing: // a download: the client got drainFlowing bytes
			n++
		case <-arrived: // an upload: the backend did
			n++
		case <-changed:
		case <-timeout:
			t.Fatalf("after 10s, %d of %d transfers flowing", n, 2*len(drainKinds))
		}
	}
}

// startDrainClients starts two transfers of each kind and returns each
// client's kind by its address, and a func that waits for them all and
// returns what each saw.
func startDrainClients(t testing.TB, e *pairEnv, flowing chan<- struct{}) (map[string]string, func() map[string]saw) {
	t.Helper()
	var mu sync.Mutex
	kinds, seen := map[string]string{}, map[string]saw{}
	var wg sync.WaitGroup
	for i := range 2 * len(drainKinds) {
		kind := drainKinds[i%len(drainKinds)]
		c, err := dialFrom(t, e.topo.LB, e.listen(portDrain).String())
		if err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().String()
		kinds[local] = kind
		wg.Go(func() {
			s := drainClient(c, kind, flowing)
			mu.Lock()
			seen[local] = s
			mu.Unlock()
		})
	}
	return kinds, func() map[string]saw {
		wg.Wait()
		return seen
	}
}

// drainClient runs one transfer of kind on c until the connection ends,
// saying on flowing once a download got drainFlowing bytes. An upload is
// paced like the slow download.
func drainClient(c *net.TCPConn, kind string, flowing chan<- struct{}) saw {
	var s saw
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if kind == "up" {
		writing := make(chan string, 1)
		go func() {
			_, end := paced(c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n", 1<<30))
			writing <- end
		}()
		s.in, _, s.end = hashAll(c)
		s.writeEnd = <-writing
		if s.writeEnd == "reset" {
			// The kernel reports a reset once: to the writer here, and
			// the reader then sees the closed socket as an EOF.
			s.end = "reset"
		}
		return s
	}
	if _, err := io.WriteString(c, "GET /down HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
		s.writeEnd = endKind(err)
	}
	if kind == "down_halfclosed" {
		_ = c.CloseWrite()
	}
	buf := make([]byte, drainChunk)
	told := false
	for {
		n, err := c.Read(buf)
		s.in += int64(n)
		if !told && s.in >= drainFlowing {
			told = true
			flowing <- struct{}{}
		}
		if err != nil {
			s.end = endKind(err)
			return s
		}
	}
}

// checkDrained: every client read an RST; every record says drained with
// the front leg cut, and the back leg cut where the client's stream still
// flowed; the backend's writes (downloads) or reads (uploads) ended by an
// RST. lost, under loss, says the proxy's host sent the back leg's RST:
// a backend that never heard of it is then logged, not failed.
func checkDrained(t testing.TB, recs []Record, kinds map[string]string, seen map[string]saw, log *sawLog, lost func(Record) bool) {
	t.Helper()
	for _, r := range recs {
		kind, cl := kinds[r.Str("front.peer")], seen[r.Str("front.peer")]
		be, heard := log.find(r.Str("back.local"), 5*time.Second)
		excused := false
		switch {
		case !heard && lost != nil && lost(r):
			// Under loss: an RST is sent once. One whose sequence number
			// was not the backend's next (segments of the upload lost
			// on the way) draws a challenge ACK (RFC 5961), and the
			// closed socket's answer to that is the reset that lands;
			// a lost challenge ACK leaves the reading backend waiting.
			// The proxy's host sent the RST: the network's loss.
			t.Logf("record %v (%s): the backend never saw the reset that left the proxy's host on %s: lost on the way", r["id"], kind, r.Str("back.local"))
			excused = true
		case !heard:
			t.Errorf("the backend reported nothing on the connection from %s after %v", r.Str("back.local"), 5*time.Second)
		}
		if cl.end != "reset" {
			t.Errorf("record %v (%s): the client's read ended %q after %d bytes (its writes %q), want an RST (never a clean early EOF)",
				r["id"], kind, cl.end, cl.in, cl.writeEnd)
		}
		backCut := kind != "down_halfclosed"
		if r.Str("outcome") != "drained" || r["front.cut"] != true || (backCut && r["back.cut"] != true) || r.Num("front.fin_out_ms") >= 0 {
			t.Errorf("record %v (%s): outcome %q, front.cut %v, back.cut %v, front.fin_out_ms %v; want drained, front cut%s, no FIN to the client",
				r["id"], kind, r.Str("outcome"), r["front.cut"], r["back.cut"], r.Num("front.fin_out_ms"), map[bool]string{true: ", back cut"}[backCut])
		}
		beEnd := be.writeEnd
		if kind == "up" {
			beEnd = be.end
		}
		if !excused && beEnd != "reset" && beEnd != "pipe" {
			t.Errorf("record %v (%s): the backend's transfer ended %q, want by an RST", r["id"], kind, beEnd)
		}
	}
}
