package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func servers(addrs ...string) []config.Server {
	out := make([]config.Server, len(addrs))
	for i, a := range addrs {
		out[i] = config.Server{Address: a, Weight: 1}
	}
	return out
}

// A dial refused by one server moves the session to the next before any
// byte was sent: every client is served, and the records say which server
// and how many tries.
func TestMultiServerRetriesNextServerOnDialFailure(t *testing.T) {
	dead, a, b := deadAddr(t), httpBackend(t, true), httpBackend(t, true)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(dead, a, b), Balance: config.BalanceRoundRobin,
			Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	const n = 9
	tries := 0
	on := map[string]int{}
	for range n {
		if got, err := get(t, h.addr, false); got != response || err != nil {
			t.Fatalf("client got %q, %v; want the response", got, err)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.BackServer == dead {
			t.Fatalf("record: outcome %s back.server %s, want ok on a live server", td.Outcome, td.BackServer)
		}
		on[td.BackServer]++
		tries += td.BackTries
	}
	// Round-robin picks the dead server every third session; each of those
	// tries the next one.
	if tries != n+n/3 || on[a] != 2*n/3 || on[b] != n/3 {
		t.Fatalf("tries %d (want %d), sessions per server %v (want %s:%d %s:%d)", tries, n+n/3, on, a, 2*n/3, b, n/3)
	}
}

// All servers refusing: dial_failed after trying each once.
func TestMultiServerAllDown(t *testing.T) {
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(deadAddr(t), deadAddr(t)), Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	if _, err := get(t, h.addr, false); err == nil {
		t.Fatal("client saw no error with every server down")
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDialFailed || td.BackTries != 2 {
		t.Fatalf("record: outcome %s tries %d, want dial_failed after 2", td.Outcome, td.BackTries)
	}
}

// waitFor polls cond every 10ms until it holds or d passes: the health
// state has no event to wait on from outside.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(t0)
}

// A server whose listener closes is taken down by failed checks within
// fall intervals, takes no sessions while down, and comes back after rise
// passed checks once it listens again.
func TestMultiServerHealthCheckDownAndUp(t *testing.T) {
	fs := newFlapServer(t)
	flap := fs.addr
	steady := httpBackend(t, true)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(flap, steady), Close: testClose(policy.TargetPeer, policy.FallbackReset),
			Health: config.Health{Check: config.HealthTCP, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond,
				Rise: 2, Fall: 2, EjectAfter: 0}})
	up := func(addr string) bool {
		for _, sv := range h.srv.Servers()["app"] {
			if sv.Address == addr {
				return sv.Health.Up
			}
		}
		return false
	}
	fs.stop()
	took := waitFor(t, 2*time.Second, "server down after its listener closed", func() bool { return !up(flap) })
	if took > 500*time.Millisecond {
		t.Errorf("down after %s, want within fall × interval (100ms) + slack", took)
	}
	for range 4 {
		if got, err := get(t, h.addr, false); got != response || err != nil {
			t.Fatalf("client got %q, %v with one server down", got, err)
		}
		if td := h.record(t); td.BackServer != steady || td.BackTries != 1 {
			t.Fatalf("record: back.server %s tries %d, want %s at the first try", td.BackServer, td.BackTries, steady)
		}
	}
	fs.start()
	waitFor(t, 2*time.Second, "server up after it listens again", func() bool { return up(flap) })
	if st := h.srv.Servers()["app"][0]; st.Health.Ejections.Check != 1 {
		t.Errorf("ejections %+v, want 1 by check", st.Health.Ejections)
	}
}

// flapServer answers like httpBackend on an address it can stop listening
// on and take up again.
type flapServer struct {
	t    *testing.T
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

func newFlapServer(t *testing.T) *flapServer {
	f := &flapServer{t: t, addr: "127.0.0.1:0"}
	f.start()
	f.addr = f.ln.Addr().String()
	t.Cleanup(f.stop)
	return f
}

func (f *flapServer) start() {
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.ln = ln
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				io.WriteString(c, response)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			})
		}
	})
}

// stop closes the listener and waits for the connections it served.
func (f *flapServer) stop() {
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	f.wg.Wait()
}

// Passive ejection: eject_after refused dials take a server down with no
// active check; it is tried again after one interval.
func TestMultiServerPassiveEjection(t *testing.T) {
	dead, live := deadAddr(t), httpBackend(t, true)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(dead, live), Balance: config.BalanceRoundRobin,
			Close:  testClose(policy.TargetPeer, policy.FallbackReset),
			Health: config.Health{Check: config.HealthOff, Interval: 300 * time.Millisecond, EjectAfter: 2, Rise: 1, Fall: 1}})
	session := func() *engine.Teardown {
		t.Helper()
		if got, err := get(t, h.addr, false); got != response || err != nil {
			t.Fatalf("client got %q, %v", got, err)
		}
		return h.record(t)
	}
	retried := 0
	for range 4 { // round-robin: the dead server is picked twice, then ejected
		if session().BackTries > 1 {
			retried++
		}
	}
	if retried != 2 {
		t.Fatalf("%d sessions tried the dead server first, want eject_after = 2", retried)
	}
	ejectedAt := time.Now()
	for range 6 {
		if td := session(); td.BackTries != 1 {
			t.Fatalf("after ejection: tries %d, want 1 (the dead server skipped)", td.BackTries)
		}
	}
	if st := h.srv.Servers()["app"][0]; st.Health.Up || st.Health.Ejections.Passive != 1 {
		t.Fatalf("dead server: %+v, want down with 1 passive ejection", st.Health)
	}
	waitFor(t, 2*time.Second, "dead server tried again after the interval", func() bool {
		return time.Since(ejectedAt) > 300*time.Millisecond && session().BackTries > 1
	})
}

// The http check passes on the expected status only, and sends the Host
// and Connection headers.
func TestMultiServerHTTPCheck(t *testing.T) {
	var status atomic.Int64
	status.Store(200)
	headers := make(chan [2]string, 4)
	addr := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		var host, conn string
		defer func() { headers <- [2]string{host, conn} }()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
			if v, ok := strings.CutPrefix(line, "Host: "); ok {
				host = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "Connection: "); ok {
				conn = strings.TrimSpace(v)
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n", status.Load())
		io.Copy(io.Discard, c)
	})
	h := config.Health{Check: config.HealthHTTP, Timeout: time.Second, HTTPRequest: "GET /healthz HTTP/1.1", ExpectStatus: 204}
	if err := check(context.Background(), h, addr); err == nil || !strings.Contains(err.Error(), "status 200, want 204") {
		t.Fatalf("check of a 200 expecting 204: %v", err)
	}
	if hc := <-headers; hc[0] != addr || hc[1] != "close" {
		t.Errorf("check sent Host %q Connection %q, want %q and close", hc[0], hc[1], addr)
	}
	status.Store(204)
	if err := check(context.Background(), h, addr); err != nil {
		t.Fatalf("check of a 204 expecting 204: %v", err)
	}
	if err := check(context.Background(), h, deadAddr(t)); err == nil {
		t.Fatal("check of a dead server passed")
	}
}

// http1 mode over three servers, one dead: client connections take turns
// (round_robin),
// a connection's requests all go to the server it got, each server's pool
// reuses its own backend connection, and a dead server is passed over.
func TestMultiServerHTTP1(t *testing.T) {
	a, b := startOrigin(t, hello), startOrigin(t, hello)
	be := http1Backend("")
	be.Address, be.Servers, be.Balance = "", servers(a.addr, deadAddr(t), b.addr), config.BalanceRoundRobin
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	const clients = 12
	on := map[string]int{}
	for i := range clients {
		raw := fmt.Sprintf("GET /a%d HTTP/1.1\r\nHost: x\r\n\r\nGET /b%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", i, i)
		got := roundTrips(t, h.addr, raw, 2)
		if want := fmt.Sprintf("200 GET /b%d 0", i); got[1] != want {
			t.Fatalf("client %d: %q, want %q second", i, got, want)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.BackRequests != 2 {
			t.Fatalf("record: outcome %s (%v) requests %d", td.Outcome, td.Err, td.BackRequests)
		}
		on[td.BackServer]++
	}
	// The dead server's turns go to the next one, b (no ejection here).
	if on[a.addr] != clients/3 || on[b.addr] != 2*clients/3 {
		t.Errorf("sessions per server %v, want %d on %s and %d on %s", on, clients/3, a.addr, 2*clients/3, b.addr)
	}
	// Two requests per session, on the session's one server.
	if a.requests.Load() != 2*clients/3 || b.requests.Load() != 4*clients/3 {
		t.Errorf("requests per origin %d, %d; want %d, %d", a.requests.Load(), b.requests.Load(), 2*clients/3, 4*clients/3)
	}
	if a.conns.Load() != 1 || b.conns.Load() != 1 {
		t.Errorf("origin connections %d, %d; want 1 each (reused through each server's pool)", a.conns.Load(), b.conns.Load())
	}
}

// A reload that changes the server list serves from the new list at once;
// the old backend's pools and health checks stop (goleak checks at the end
// of the package's tests).
func TestMultiServerReloadChangesServers(t *testing.T) {
	a, b, c := httpBackend(t, true), httpBackend(t, true), httpBackend(t, true)
	hc := config.Health{Check: config.HealthTCP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 1, Fall: 1}
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(a, b), Balance: config.BalanceRoundRobin, Health: hc,
			Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	serve := func() string {
		t.Helper()
		if got, err := get(t, h.addr, false); got != response || err != nil {
			t.Fatalf("client got %q, %v", got, err)
		}
		return h.record(t).BackServer
	}
	if first, second := serve(), serve(); first != a || second != b {
		t.Fatalf("before the reload: %s, %s; want %s, %s", first, second, a, b)
	}
	next := runningConfig(h)
	next.Backends[0].Servers = servers(b, c)
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	on := map[string]int{}
	for range 4 {
		on[serve()]++
	}
	if on[b] != 2 || on[c] != 2 {
		t.Fatalf("after the reload: sessions per server %v, want 2 on %s and on %s", on, b, c)
	}
	if st := h.srv.Servers()["app"]; len(st) != 2 || st[0].Address != b || st[1].Address != c {
		t.Fatalf("servers after the reload: %+v", st)
	}
}

// A server that accepts every connection but resets every session is
// ejected after eject_after such sessions: its successful dials do not
// wipe the count, only a session it served does.
func TestMultiServerPassiveEjectsServerThatResetsEverySession(t *testing.T) {
	resetter := loopback.Serve(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		c.Read(buf)
		c.SetLinger(0)
		c.Close()
	})
	live := httpBackend(t, true)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Servers: servers(resetter, live), Balance: config.BalanceRoundRobin,
			Close:  testClose(policy.TargetPeer, policy.FallbackReset),
			Health: config.Health{Check: config.HealthOff, Interval: time.Hour, EjectAfter: 2, Rise: 1, Fall: 1}})
	resets := 0
	for range 6 {
		get(t, h.addr, false)
		td := h.record(t)
		switch {
		case td.BackServer == resetter && td.Outcome == engine.OutcomeBackendReset:
			resets++
		case td.BackServer == live && td.Outcome == engine.OutcomeOK:
		default:
			t.Errorf("session on %s ended %s (%v)", td.BackServer, td.Outcome, td.Err)
		}
	}
	if resets != 2 {
		t.Errorf("%d sessions reset by the resetting server, want eject_after = 2, then none", resets)
	}
	if st := h.srv.Servers()["app"][0]; st.Health.Up || st.Health.Ejections.Passive != 1 {
		t.Errorf("resetting server: %+v, want down with 1 passive ejection", st.Health)
	}
}

// A backend no listener names has no pool and no checks until a reload
// gives it a listener: a spare backend (the example configuration has
// one) must not dial a server that may not exist.
func TestUnusedBackendIsNotRun(t *testing.T) {
	spareAccepted := make(chan struct{}, 16)
	spare := httpBackendTelling(t, true, spareAccepted)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(httpBackend(t, true)),
		func(c *config.Config) {
			sb := c.Backends[0]
			sb.Name, sb.Address, sb.Pool.Warm = "spare", spare, 2
			c.Backends = append(c.Backends, sb)
		})
	if _, ok := h.srv.Servers()["spare"]; ok {
		t.Fatal("the unused backend has servers running")
	}
	next := runningConfig(h)
	ln := next.Listeners[0]
	ln.Name, ln.Backend = "spare", "spare"
	next.Listeners = append(next.Listeners, ln)
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	if st := h.srv.Servers()["spare"]; len(st) != 1 || st[0].Address != spare {
		t.Fatalf("after a listener named it: servers %+v", st)
	}
	select { // its warm pool dials now
	case <-spareAccepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend a listener now names was never dialed")
	}
}
