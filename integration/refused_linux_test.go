package integration

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A client that closes its socket (not only its sending side) right after
// its request refuses the answer that comes after it with an RST; the
// proxy's FIN went second, in the answer's segment. When that RST comes
// late (here the network loses it: nftables in the proxy's namespace
// drops the client's resets until the proxy is seen waiting, and its
// retransmission then draws one), the proxy must wait for the client's answer to its FIN, not take the FIN for
// acknowledged: the record says the client reset the leg, no TIME-WAIT on
// it, and the kernels agree by 4-tuple. The backend had the request whole
// and its leg ends by FINs.
func TestLateRefusalIsTheClientsReset(t *testing.T) {
	needTool(t, "nft")
	topo := newCountingTopology(t)
	req := blob(300)
	got := make(chan []byte, 1)
	be := scriptBackend(t, topo.Web, addrPort(topo.WebAddr, 9300), func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c) // the request, then the proxy's FIN it passes on
		select {
		case got <- b:
		default: // one connection only: the test fails on a second
		}
		if err == nil {
			_, _ = c.Write(blob(200))
		}
		_ = c.Close()
	})
	front := addrPort(topo.ProxyFront, 8300)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "refused", Listen: front, Backend: be,
		Front: CloseOpts{TimeWait: "proxy", DrainTimeout: "5s"}, Back: CloseOpts{TimeWait: "proxy"},
		Pool: PoolOpts{Warm: "0"}, // the backend's one connection is the session's
	}))
	c, err := dialFrom(t, topo.LB, front)
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).Port
	nftRules(t, topo, topo.Proxy, fmt.Sprintf(`table inet closeproxy_refused {
	chain in {
		type filter hook prerouting priority 0;
		tcp sport %d tcp flags & rst == rst counter drop
	}
}
`, port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	select {
	case b := <-got:
		if string(b) != string(req) {
			t.Fatalf("backend read %d bytes, not the request's %d", len(b), len(req))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never read the request and its end")
	}
	// The proxy's FIN went with the answer and waits for an answer of
	// its own (LAST-ACK) while the client's resets are dropped; then
	// they pass, and the proxy's next retransmission draws one. The
	// kernel's state is polled: no event tells it.
	awaitKernel(t, "the proxy's front socket never waited in LAST-ACK", proxySocketIn(t, topo, "last-ack", port))
	if dropped := topo.Exec(t, topo.Proxy, "nft", "list", "table", "inet", "closeproxy_refused"); strings.Contains(dropped, "counter packets 0 ") {
		t.Errorf("nft dropped no reset of the client's:\n%s", dropped)
	}
	topo.Exec(t, topo.Proxy, "nft", "delete", "table", "inet", "closeproxy_refused")
	requireRefused(t, topo, cp, "front", front, be)
}

// requireRefused checks the one record of a session whose leg (front or
// back) the peer refused: its reset recorded (outcome client_reset or
// backend_reset, close peer_reset, no TIME-WAIT), the other leg ended by
// FINs with nothing cut, and every claim matched to the kernel's
// TIME-WAIT sockets by 4-tuple. An order may stay unknown on the other
// leg: its peer's ACK of the proxy's FIN and its own FIN come back to
// back (not under test).
func requireRefused(t *testing.T, topo *Topology, cp *Closeproxy, leg, front, be string) {
	t.Helper()
	other, outcome := "back", "client_reset"
	if leg == "back" {
		other, outcome = "front", "backend_reset"
	}
	recs := cp.WaitRecords(t, 1, 15*time.Second)
	r := recs[0]
	if r.Str("outcome") != outcome || r.Str(leg+".close") != "peer_reset" || r.Str(leg+".time_wait") != "none" {
		t.Errorf("record: outcome %q, %s close %q, time_wait %q; want %s, peer_reset, none\n%s",
			r.Str("outcome"), leg, r.Str(leg+".close"), r.Str(leg+".time_wait"), outcome, legs(r))
	}
	if r.Str(other+".close") != "fin" || r[other+".cut"] == true {
		t.Errorf("record: %s close %q, cut %v; want fin, nothing cut\n%s", other, r.Str(other+".close"), r[other+".cut"], legs(r))
	}
	held, live, busy := scopeTimeWait(t, topo, 5*time.Second, mustAddrPort(t, front), mustAddrPort(t, be))
	if len(busy) > 0 {
		t.Errorf("sockets still busy: %q", busy)
	}
	requireAgreement(t, topo, recs, judgeClaims(held, live, recs), 1)
}

// A backend that answers early and closes its socket while the last of
// the upload the proxy passed on is still on its way refuses those bytes
// with an RST when they (or the proxy's FIN after them) come: it holds no
// TIME-WAIT, though its FIN came first and the proxy's second. Here the
// network loses the upload (nftables in the backend's namespace drops the
// proxy's data segments once the backend read the request's head), so the
// backend's FIN acknowledges only the head; the proxy's FIN, behind the
// missing bytes, draws the reset. The proxy read the answer after it sent
// the upload, so the bytes it sent are not the last on the leg: only what
// the backend's FIN acknowledged tells. The record must say the backend
// reset the leg, no TIME-WAIT on it, and the kernels agree by 4-tuple; the
// client has the answer whole and its leg ends by FINs.
//
// An http1 session with no backend connection ready runs on a goroutine;
// with one warm in the pool it stays on its loop ("on the loop": the pool
// then dials another, which only waits).
func TestBackendThatClosedOnAnUploadInFlightResetsIt(t *testing.T) {
	body := blob(300)
	head := []byte(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n", len(body)))
	sized := []byte("HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
	untilClose := []byte("HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\ntoo large") // the backend's FIN ends it
	t.Run("tcp", func(t *testing.T) { uploadInFlight(t, "tcp", "0", blob(100), blob(300), blob(200)) })
	t.Run("http1", func(t *testing.T) { uploadInFlight(t, "http1", "0", head, body, sized) })
	t.Run("http1 until close", func(t *testing.T) { uploadInFlight(t, "http1", "0", head, body, untilClose) })
	t.Run("http1 on the loop", func(t *testing.T) { uploadInFlight(t, "http1", "1", head, body, sized) })
	t.Run("http1 until close on the loop", func(t *testing.T) { uploadInFlight(t, "http1", "1", head, body, untilClose) })
}

func uploadInFlight(t *testing.T, protocol, warm string, head, body, answer []byte) {
	// The backend reads the head only: the body is lost, its close a FIN.
	sc := startAnswered(t, 1, len(head), answer, ListenerOpts{Name: "upload", Protocol: protocol,
		Front: CloseOpts{TimeWait: "proxy"}, Back: CloseOpts{TimeWait: "proxy", DrainTimeout: "5s"},
		Pool: PoolOpts{Warm: warm}})
	topo, be, c := sc.topo, sc.be, sc.c
	if _, err := c.Write(head); err != nil {
		t.Fatal(err)
	}
	be.expect(t, head)
	// Data segments toward the backend are longer than any without data
	// (IPv4 and TCP headers with options: 60 bytes at most).
	nftRules(t, topo, topo.Web, `table inet closeproxy_upload {
	chain in {
		type filter hook prerouting priority 0;
		tcp dport 9301 ip length > 64 counter drop
	}
}
`)
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	// No event tells that the proxy passed the body on: the drop counter
	// is polled.
	awaitKernel(t, "the proxy never passed the body on", func() bool {
		return !strings.Contains(topo.Exec(t, topo.Web, "nft", "list", "table", "inet", "closeproxy_upload"), "counter packets 0 ")
	})
	close(be.answerNow)
	select {
	case <-be.closed:
	case <-time.After(15 * time.Second):
		t.Fatal("the backend never closed")
	}
	// The body lost so far is retransmitted from now on: it draws the
	// closed backend's reset, as the proxy's FIN behind it does (whether
	// it crossed the backend's or came after it), whichever comes first.
	topo.Exec(t, topo.Web, "nft", "delete", "table", "inet", "closeproxy_upload")
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(answer) {
		t.Fatalf("client read %d bytes (%v); want the answer's %d, then EOF", len(got), err, len(answer))
	}
	_ = c.Close()
	requireRefused(t, topo, sc.cp, "back", sc.front, be.addr)
}

// A client that resets while the proxy waits to reset it safely: the
// front leg's target is nowhere, the client's FIN came first, and the
// proxy's safe reset waits for the client to acknowledge the whole answer
// (its send queue to drain). Here the network loses the client's ACKs
// (nftables in the load balancer's namespace drops every segment of the
// client's but its resets), so the queue never drains by itself; the
// client, which has the answer, closes with SO_LINGER 0. Its RST ends the
// wait at once: the record must say the client reset the leg, no
// TIME-WAIT on it (the kernels agree by 4-tuple), not a reset of the
// proxy's, and not after drain_timeout. In tcp mode, and in http1 mode
// with the session on a goroutine (no backend connection ready) and on
// its loop (one warm in the pool).
func TestClientResetDuringASafeResetIsItsOwn(t *testing.T) {
	answer := blob(2000)
	req := []byte("GET /r HTTP/1.1\r\nHost: web\r\n\r\n") // its end: the client's FIN
	resp := append([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(answer))), answer...)
	t.Run("tcp", func(t *testing.T) { resetDuringSafeReset(t, "tcp", "0", blob(300), answer) })
	t.Run("http1", func(t *testing.T) { resetDuringSafeReset(t, "http1", "0", req, resp) })
	t.Run("http1 on the loop", func(t *testing.T) { resetDuringSafeReset(t, "http1", "1", req, resp) })
}

func resetDuringSafeReset(t *testing.T, protocol, warm string, req, answer []byte) {
	sc := startAnswered(t, 2, len(req), answer, ListenerOpts{Name: "resetting", Protocol: protocol,
		Front: CloseOpts{TimeWait: "nowhere", DrainTimeout: "5s"}, Back: CloseOpts{TimeWait: "proxy"},
		Pool: PoolOpts{Warm: warm}})
	topo, be, c := sc.topo, sc.be, sc.c
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	be.expect(t, req)
	// The client's FIN must be in before its segments are dropped: the
	// proxy's socket then stands in CLOSE-WAIT.
	port := c.LocalAddr().(*net.TCPAddr).Port
	awaitKernel(t, "the client's FIN never reached the proxy", proxySocketIn(t, topo, "close-wait", port))
	nftRules(t, topo, topo.LB, fmt.Sprintf(`table inet closeproxy_noacks {
	chain out {
		type filter hook output priority 0;
		tcp sport %d tcp flags & rst == 0 counter drop
	}
}
`, port))
	close(be.answerNow)
	got := make([]byte, len(answer))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(answer) {
		t.Fatalf("client read the answer: %v", err)
	}
	if dropped := topo.Exec(t, topo.LB, "nft", "list", "table", "inet", "closeproxy_noacks"); strings.Contains(dropped, "counter packets 0 ") {
		t.Errorf("nft dropped no ACK of the client's:\n%s", dropped)
	}
	start := time.Now()
	_ = c.SetLinger(0)
	_ = c.Close()
	sc.cp.WaitRecords(t, 1, 15*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the record came %v after the client's reset: the proxy waited for its drain_timeout", d.Round(time.Millisecond))
	}
	topo.Exec(t, topo.LB, "nft", "delete", "table", "inet", "closeproxy_noacks")
	requireRefused(t, topo, sc.cp, "front", sc.front, be.addr)
}

// answeredScene is a session's setting for the refusal tests: three
// hosts, an answeringBackend, closeproxy in front of it and a client
// connected from the load balancer's host.
type answeredScene struct {
	topo  *Topology
	be    *answeringBackend
	cp    *Closeproxy
	c     *net.TCPConn
	front string
}

// startAnswered sets up a scene: the backend on port 9300+k reads n bytes
// and answers answer, closeproxy listens on 8300+k as opts say (its
// Listen and Backend filled in), the client is connected. With warm
// connections, the pool's first one is ready first: the session takes it.
func startAnswered(t *testing.T, k uint16, n int, answer []byte, opts ListenerOpts) *answeredScene {
	needTool(t, "nft")
	sc := &answeredScene{topo: newCountingTopology(t)}
	sc.be = newAnsweringBackend(t, sc.topo, 9300+k, n, answer)
	sc.front = addrPort(sc.topo.ProxyFront, 8300+k)
	opts.Listen, opts.Backend = sc.front, sc.be.addr
	sc.cp = startCloseproxy(t, sc.topo, sc.topo.Proxy, closeproxyConfig(opts))
	sc.be.awaitWarm(t, opts.Pool.Warm)
	c, err := dialFrom(t, sc.topo.LB, sc.front)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	sc.c = c
	return sc
}

// awaitKernel waits for a fact of the kernel's that no event tells (a
// socket's state, a filter's counter), polled every 5 ms for at most 5 s;
// then the test fails with what.
func awaitKernel(t *testing.T, what string, fact func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !fact(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// proxySocketIn reports whether the proxy's host holds a socket in state
// toward the client's port.
func proxySocketIn(t *testing.T, topo *Topology, state string, port int) func() bool {
	return func() bool {
		return strings.TrimSpace(topo.Exec(t, topo.Proxy, "ss", "-Htn", "state", state, "dport", "=", fmt.Sprintf(":%d", port))) != ""
	}
}

// answeringBackend is a scripted backend whose first connection reads n
// bytes, hands them to got, writes answer once answerNow is closed, and
// closes (closed); the pool's later warm connections only wait.
type answeringBackend struct {
	addr      string
	got       chan []byte
	answerNow chan struct{}
	accepted  chan struct{} // the first connection came
	closed    chan struct{} // and was closed
}

func newAnsweringBackend(t *testing.T, topo *Topology, port uint16, n int, answer []byte) *answeringBackend {
	b := &answeringBackend{got: make(chan []byte, 1), answerNow: make(chan struct{}), accepted: make(chan struct{}), closed: make(chan struct{})}
	var conns atomic.Int32
	b.addr = scriptBackend(t, topo.Web, addrPort(topo.WebAddr, port), func(c *net.TCPConn) {
		if conns.Add(1) > 1 {
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
			return
		}
		close(b.accepted)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		in := make([]byte, n)
		if _, err := io.ReadFull(c, in); err != nil {
			in = nil
		}
		b.got <- in
		select {
		case <-b.answerNow:
			_, _ = c.Write(answer)
		case <-time.After(10 * time.Second):
		}
		_ = c.Close()
		close(b.closed)
	})
	return b
}

// awaitWarm waits, when the pool keeps warm connections, until the first
// is ready: the session takes it only then.
func (b *answeringBackend) awaitWarm(t *testing.T, warm string) {
	t.Helper()
	if warm == "0" {
		return
	}
	select {
	case <-b.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the pool never dialed the backend")
	}
}

// expect waits for the backend to have read want.
func (b *answeringBackend) expect(t *testing.T, want []byte) {
	t.Helper()
	select {
	case got := <-b.got:
		if string(got) != string(want) {
			t.Fatalf("backend read %d bytes, not the %d sent", len(got), len(want))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never read what the client sent")
	}
}
