package integration

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pacedBackend is a keep-alive HTTP/1.1 server in the web namespace:
// /big sends body in chunks with a pause between them, so that the
// transfer lasts long enough to drain around it; anything else gets "ok".
type pacedBackend struct {
	addr string
	srv  *http.Server
	wg   sync.WaitGroup
}

func startPacedBackend(t testing.TB, ns, addr string, body []byte, chunk int, pause time.Duration) *pacedBackend {
	t.Helper()
	ln := listenIn(t, ns, addr)
	b := &pacedBackend{addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		rc := http.NewResponseController(w)
		for off := 0; off < len(body); off += chunk {
			if _, err := w.Write(body[off:min(off+chunk, len(body))]); err != nil {
				return
			}
			rc.Flush()
			time.Sleep(pause)
		}
	})}
	b.wg.Go(func() { b.srv.Serve(ln) })
	t.Cleanup(b.Stop)
	return b
}

// Stop closes the server and every connection: the web server stops.
func (b *pacedBackend) Stop() {
	b.srv.Close()
	b.wg.Wait()
}

// TestDrainThenSIGTERMAsThePodDoes runs the sequence of the Kubernetes
// manifests against the real binary: `closeproxy drain -delay -wait` (the
// preStop hook), then the web server stops, then SIGTERM. With a long
// transfer and an idle keep-alive connection open when the drain starts:
// /readyz fails at once; during the delay a new client is still served;
// after it new connections are refused and the idle connection is closed
// at once; the transfer completes whole (SHA-256) with an ok record, drain
// returns only after it, and SIGTERM then ends the process at once, exit 0.
func TestDrainThenSIGTERMAsThePodDoes(t *testing.T) {
	const (
		size     = 2 << 20
		chunk    = 64 << 10
		pause    = 40 * time.Millisecond // 32 chunks: about 1.3s of transfer
		shutdown = 10 * time.Second
		delay    = 500 * time.Millisecond // drain -delay: the listeners stay open this long
	)
	topo := newTopology(t)
	body := blob(size)
	want := sha256.Sum256(body)
	backend := startPacedBackend(t, topo.Web, addrPort(topo.WebAddr, 80), body, chunk, pause)
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfigWith(
		GlobalOpts{ShutdownTimeout: shutdown.String(), AdminListen: adminAddr},
		ListenerOpts{Name: "web", Listen: front, Backend: backend.addr, Protocol: "http1", IdleTimeout: "60s"},
	))
	waitReady(t, topo)

	idle, idleR := keepAliveGet(t, topo, front, "/small")
	long, longR := keepAliveGet(t, topo, front, "") // the request is sent below
	fmt.Fprintf(long, "GET /big HTTP/1.1\r\nHost: web\r\n\r\n")
	resp, err := http.ReadResponse(longR, nil)
	if err != nil {
		t.Fatalf("long transfer: %v", err)
	}
	first := make([]byte, chunk/2)
	if _, err := io.ReadFull(resp.Body, first); err != nil { // the transfer is under way
		t.Fatalf("long transfer: %v", err)
	}
	type transfer struct {
		sum [32]byte
		n   int64
		err error
		at  time.Time
	}
	got := make(chan transfer, 1)
	go func() {
		h := sha256.New()
		h.Write(first)
		n, err := io.Copy(h, resp.Body)
		var tr transfer
		copy(tr.sum[:], h.Sum(nil))
		tr.n, tr.err, tr.at = n+int64(len(first)), err, time.Now()
		got <- tr
	}()

	// The preStop hook.
	drainStart := time.Now()
	drain := topo.Cmd(topo.Proxy, buildBinary(t, "./cmd/closeproxy"), "drain", "-admin", adminAddr, "-delay", delay.String(), "-wait", "-timeout", "20s")
	var drainOut strings.Builder
	drain.Stdout, drain.Stderr = &drainOut, &drainOut
	if err := drain.Start(); err != nil {
		t.Fatal(err)
	}
	drained := make(chan time.Time, 1)
	go func() { drain.Wait(); drained <- time.Now() }()

	for {
		status, reason, err := adminGet(t, topo.Proxy, adminAddr, "/readyz")
		if err == nil && status == http.StatusServiceUnavailable && strings.TrimSpace(reason) == "draining" {
			break
		}
		if time.Since(drainStart) > time.Second {
			t.Fatalf("/readyz %v after drain began: %d %q %v, want 503 draining", time.Since(drainStart), status, reason, err)
		}
		time.Sleep(10 * time.Millisecond) // polled, as the kubelet does
	}
	// Not ready, still accepting: a client routed here meanwhile is served.
	if status := getClose(t, topo, front, "/small"); status != http.StatusOK {
		t.Errorf("a request during the drain's delay: status %d, want 200", status)
	}
	if d := time.Since(drainStart); d >= delay {
		t.Logf("the request during the delay ended only %v after drain began: its check is void", d)
	}
	var refusedAt time.Time
	for {
		c, err := dialFrom(t, topo.LB, front)
		if errors.Is(err, syscall.ECONNREFUSED) {
			refusedAt = time.Now()
			break
		}
		if err == nil {
			c.Close() // accepted during the delay: a client that gives up
		}
		if time.Since(drainStart) > delay+time.Second {
			t.Fatalf("a new connection %v after drain began: %v, want refused", time.Since(drainStart), err)
		}
		time.Sleep(10 * time.Millisecond) // the drain request may still be on its way
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection: %v, want EOF at once", err)
	}
	idleClosed := time.Since(drainStart)
	idle.Close()

	tr := <-got
	if tr.err != nil || tr.n != size || tr.sum != want {
		t.Fatalf("long transfer: %d of %d bytes, sha256 match %v, %v", tr.n, size, tr.sum == want, tr.err)
	}
	if refusedAt.After(tr.at) {
		t.Errorf("readiness failed and accepting stopped only after the transfer ended")
	}
	long.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := longR.ReadByte(); err != io.EOF { // the session ends after its response
		t.Errorf("after the long transfer: %v, want EOF", err)
	}
	long.Close()
	var drainedAt time.Time
	select {
	case drainedAt = <-drained:
	case <-time.After(10 * time.Second):
		t.Fatalf("closeproxy drain -wait still running 10s after the transfer ended: %s\n%s", drainOut.String(), cp.Output())
	}
	if drainedAt.Before(tr.at) {
		t.Errorf("drain returned %v before the transfer ended", tr.at.Sub(drainedAt))
	}
	if drain.ProcessState.ExitCode() != 0 || !strings.Contains(drainOut.String(), "drained") {
		t.Errorf("closeproxy drain: exit %d, %q", drain.ProcessState.ExitCode(), drainOut.String())
	}
	if refusedAt.Sub(drainStart) < delay {
		t.Errorf("new connections refused %v after drain began, before its delay (%v)", refusedAt.Sub(drainStart), delay)
	}
	// The long session's record, written once its session ended: drain
	// -wait may return, and the client read EOF, a moment before it.
	cp.WaitLogMatch(t, "the long transfer's teardown record", func(r Record) bool {
		return r.Str("msg") == "teardown" && r.Num("front.bytes_out") >= size
	}, 0, 5*time.Second)
	recs := cp.WaitRecords(t, 3, 5*time.Second) // and those of the dials during the delay
	draining, out := 0, 0.0
	for _, r := range recs {
		if r.Str("outcome") != "ok" {
			t.Errorf("record %v: outcome %q, want ok", r["id"], r.Str("outcome"))
		}
		if r.Str("front.reason") == "draining" {
			draining++
		}
		out += r.Num("front.bytes_out")
	}
	if draining < 2 {
		t.Errorf("%d records end by draining, want the idle and the long one's at least", draining)
	}
	if out < size {
		t.Errorf("records: %v bytes to clients, want the whole transfer (%d)", out, size)
	}

	backend.Stop() // the web server stops (nginx's preStop), then SIGTERM
	term := time.Now()
	cp.Signal(t, syscall.SIGTERM)
	if err := cp.Wait(t, 2*time.Second); err != nil {
		t.Errorf("closeproxy after SIGTERM: %v, want exit 0\n%s", err, cp.Output())
	}
	t.Logf("drain: 503 at once, refused after %v (the delay), idle closed after %v, transfer ended %v, drain returned %v after it; exit %v after SIGTERM",
		refusedAt.Sub(drainStart).Round(time.Millisecond), idleClosed.Round(time.Millisecond), tr.at.Sub(drainStart).Round(time.Millisecond),
		drainedAt.Sub(tr.at).Round(time.Millisecond), time.Since(term).Round(time.Millisecond))
}

// getClose sends one GET with "Connection: close" on a new connection and
// returns the response's status.
func getClose(t testing.TB, topo *Topology, addr, path string) int {
	t.Helper()
	c, err := dialFrom(t, topo.LB, addr)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls /readyz, with a deadline, until it answers 200.
func waitReady(t testing.TB, topo *Topology) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		status, body, err := adminGet(t, topo.Proxy, adminAddr, "/readyz")
		if err == nil && status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q %v, want 200", status, body, err)
		}
	}
}

// keepAliveGet opens a connection from lb to addr and, unless path is "",
// asks for path and reads the response, leaving the connection open.
func keepAliveGet(t testing.TB, topo *Topology, addr, path string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := dialFrom(t, topo.LB, addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if path == "" {
		return c, br
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web\r\n\r\n", path)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatalf("GET %s: the response closes the connection", path)
	}
	c.SetDeadline(time.Time{})
	return c, br
}

// TestAdminIdleConnectionsCannotStarveTheDataPlane holds 600 idle
// keep-alive connections to the admin port of a closeproxy limited to 256
// descriptors: the admin server takes at most its cap of them (the rest
// wait in the kernel's backlog), so the data plane keeps serving.
func TestAdminIdleConnectionsCannotStarveTheDataPlane(t *testing.T) {
	needTool(t, "prlimit")
	topo := newTopology(t)
	backend := startPacedBackend(t, topo.Web, addrPort(topo.WebAddr, 80), nil, 1, 0)
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxyWrapped(t, topo, topo.Proxy, closeproxyConfigWith(
		GlobalOpts{AdminListen: adminAddr},
		ListenerOpts{Name: "web", Listen: front, Backend: backend.addr, Protocol: "http1"},
	), "prlimit", "--nofile=256:256")
	waitReady(t, topo)
	for i := range 600 {
		c, err := dialFrom(t, topo.Proxy, adminAddr) // the kernel completes each handshake
		if err != nil {
			t.Fatalf("admin connection %d: %v", i, err)
		}
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n") // then idle, kept alive
	}
	if n := fdCount(t, cp.Pid()); n > 200 {
		t.Errorf("closeproxy holds %d descriptors with 600 admin clients, want the admin cap's worth", n)
	}
	for range 20 {
		c, _ := keepAliveGet(t, topo, front, "/")
		c.Close()
	}
	if recs := cp.WaitRecords(t, 20, 5*time.Second); len(recs) < 20 {
		t.Errorf("%d records, want 20", len(recs))
	}
}
