package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A reload flips the front policy and adds a listener while a session is
// open: the session goes on untouched, new connections get the new policy,
// the new listener serves.
func TestReloadKeepsSessionsAndSwapsPolicy(t *testing.T) {
	dialed := make(chan struct{}, 8)
	be := httpBackendTelling(t, true, dialed)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be))
	live, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// A connection still in the listen backlog would be accepted after the
	// reload, under the new policy: wait until its session dialed.
	<-dialed

	next := runningConfig(h)
	next.Listeners[0].Close.TimeWait = policy.TargetPeer
	added := next.Listeners[0]
	added.Name, added.Listen = "added", "127.0.0.1:0"
	next.Listeners = append(next.Listeners, added)
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	addrs := h.srv.Addrs()
	if len(addrs) != 2 || addrs[0].String() != h.addr {
		t.Fatalf("listeners after reload: %v (first was %s)", addrs, h.addr)
	}

	io.WriteString(live, "GET / HTTP/1.1\r\n\r\n")
	if got, _ := io.ReadAll(live); string(got) != response {
		t.Errorf("the session open across the reload got %q", got)
	}
	if td := h.record(t); td.Front.Wanted != "proxy" {
		t.Errorf("session accepted before the reload: wanted %s", td.Front.Wanted)
	}
	for _, addr := range []string{h.addr, addrs[1].String()} {
		if got, err := get(t, addr, true); got != response {
			t.Fatalf("%s after reload: %q %v", addr, got, err)
		}
		if td := h.record(t); td.Front.Wanted != "client" {
			t.Errorf("%s: new session wanted %s, want client", addr, td.Front.Wanted)
		}
	}
}

// A reload that cannot bind changes nothing: neither the policy nor which
// sessions the record log gets.
func TestReloadBindFailureKeepsOldConfig(t *testing.T) {
	be := httpBackend(t, true)
	core, logged := observer.New(zapcore.InfoLevel)
	h := startProxyWith(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be),
		[]Option{WithRecordLog(zap.New(core))})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	next := runningConfig(h)
	next.Listeners[0].Close.TimeWait = policy.TargetNowhere
	next.Log.Teardown = "errors" // were it taken, the ok session below would log no record
	taken := next.Listeners[0]
	taken.Name, taken.Listen = "taken", busy.Addr().String()
	next.Listeners = append(next.Listeners, taken)
	if err := h.srv.Reload(context.Background(), &next); err == nil {
		t.Fatal("reload onto a busy address succeeded")
	}
	if got, _ := get(t, h.addr, false); got != response {
		t.Fatalf("after a failed reload: %q", got)
	}
	td := h.record(t)
	if td.Front.Wanted != "proxy" {
		t.Errorf("policy changed by a failed reload: %s", td.Front.Wanted)
	}
	if td.Outcome != engine.OutcomeOK || logged.FilterMessage("teardown").Len() != 1 {
		t.Errorf("outcome %s, %d teardown lines logged; want ok and 1 (log.teardown changed by a failed reload?)",
			td.Outcome, logged.FilterMessage("teardown").Len())
	}
}

// A listen address spelled anew for the same socket keeps that socket:
// binding it beside itself would fail, and with it the whole reload.
func TestReloadKeepsARespelledListener(t *testing.T) {
	be := httpBackend(t, true)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be),
		func(c *config.Config) { c.Listeners[0].Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) })
	next := runningConfig(h)
	next.Listeners[0].Listen = net.JoinHostPort("::ffff:127.0.0.1", strconv.Itoa(port))
	next.Listeners[0].Close.TimeWait = policy.TargetPeer
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatalf("reload with the listener's address respelled: %v", err)
	}
	if got, err := get(t, h.addr, true); got != response {
		t.Fatalf("after the reload: %q %v", got, err)
	}
	if td := h.record(t); td.Front.Wanted != "client" {
		t.Errorf("new session wanted %s, want client (the reload's)", td.Front.Wanted)
	}
}

// runningConfig returns a copy of the configuration h serves, with its own
// Listeners and Backends slices, for a test to change and hand to Reload.
func runningConfig(h *harness) config.Config {
	h.srv.mu.Lock()
	next := *h.srv.cfg
	h.srv.mu.Unlock()
	next.Listeners = append([]config.Listener(nil), next.Listeners...)
	next.Backends = append([]config.Backend(nil), next.Backends...)
	return next
}

// A reload that replaces a backend keeps its servers' ejection counts and
// its pools' counters: they are counters, which must never go back while
// the process lives (they used to restart from zero with the new pools).
func TestReloadKeepsCounters(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens: every dial is refused
	be := defaultBackend(closed)
	be.Health = config.Health{Check: config.HealthOff, EjectAfter: 1, Interval: time.Minute}
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	exchange(t, h.addr, "x")
	if td := h.record(t); td.Outcome != engine.OutcomeDialFailed {
		t.Fatalf("outcome %s, want dial_failed", td.Outcome)
	}
	before, failures := h.srv.Servers()["app"][0].Health.Ejections, h.srv.PoolStats()["app"].DialFailures
	if before.Passive != 1 || failures != 1 {
		t.Fatalf("before the reload: ejections %+v, dial failures %d; want 1 passive, 1", before, failures)
	}
	next := runningConfig(h)
	next.Backends[0].ConnectTimeout *= 2 // a changed backend: new pools and health
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	after, failuresAfter := h.srv.Servers()["app"][0].Health.Ejections, h.srv.PoolStats()["app"].DialFailures
	if after != before || failuresAfter != failures {
		t.Errorf("after the reload: ejections %+v, dial failures %d; want %+v and %d as before", after, failuresAfter, before, failures)
	}
}

// A pool retired, by a reload that moves its backend to another address
// or by a drain (a drained proxy may run on until SIGTERM; its warm
// connections held up the backend's own graceful stop, dialed again every
// max_idle_age): its idle warm connections are closed at once and no more
// are dialed (its health checks stop too), while a session open across it
// goes on over its connection to the old address to its end.
func TestRetiredPoolStopsWarming(t *testing.T) {
	for _, tc := range []struct {
		name   string
		retire func(t *testing.T, h *harness)
	}{
		{"reload", func(t *testing.T, h *harness) {
			next := runningConfig(h)
			next.Backends[0].Address = loopback.Serve(t, loopback.Echo)
			if err := h.srv.Reload(context.Background(), &next); err != nil {
				t.Fatal(err)
			}
		}},
		{"drain", func(t *testing.T, h *harness) { h.srv.Drain() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepted, open atomic.Int64
			old := loopback.Serve(t, func(c *net.TCPConn) {
				accepted.Add(1)
				open.Add(1)
				defer open.Add(-1)
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				io.Copy(c, c) // echo until the proxy ends it
			})
			b := defaultBackend(old)
			b.Pool = config.Pool{Warm: 3, MaxIdleAge: 200 * time.Millisecond}
			h := startProxy(t, config.Listener{IdleTimeout: time.Minute, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
			live, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer live.Close()
			live.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(live, "ping")
			buf := make([]byte, 4)
			if _, err := io.ReadFull(live, buf); err != nil {
				t.Fatal(err)
			}
			h.srv.mu.Lock()
			retired := h.srv.backends["app"] // the backend whose pool retires
			h.srv.mu.Unlock()
			tc.retire(t, h)
			// A drain retires the pools once its accept loops are done.
			for deadline := time.Now().Add(5 * time.Second); !retired.retiring.Load(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the pool did not retire within 5s of the %s", tc.name)
				}
			}
			// The old address keeps the live session's connection only.
			for deadline := time.Now().Add(5 * time.Second); open.Load() != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the old address still has %d connections open 5s after the %s; want the live session's alone", open.Load(), tc.name)
				}
			}
			n := accepted.Load()
			// Absence takes a wait: five of the old pool's max_idle_age, in
			// which a warming pool would dial its three again and again
			// (a dozen or more). Its refill's dials under way as the pool
			// retired (three at most) may reach the old address after it.
			time.Sleep(5 * b.Pool.MaxIdleAge)
			if m := accepted.Load(); m > n+int64(b.Pool.Warm) {
				t.Errorf("the old address accepted %d more connections after the %s: its pool still warms", m-n, tc.name)
			}
			io.WriteString(live, "pong")
			if _, err := io.ReadFull(live, buf); err != nil || string(buf) != "pong" {
				t.Errorf("the session open across the %s: %q %v", tc.name, buf, err)
			}
		})
	}
}

// A reload that replaces a backend hands its servers' session counts on:
// a session still open on the old backend counts in Servers() (the
// metric closeproxy_backend_server_active_sessions) and for least_conn,
// and its end counts it out. The new backend's counts started at 0.
func TestReloadKeepsActiveSessionsCounted(t *testing.T) {
	be := defaultBackend(loopback.Serve(t, loopback.Echo))
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("the echo: %v", err)
	}
	active := func() int64 { return h.srv.Servers()["app"][0].Active }
	if n := active(); n != 1 {
		t.Fatalf("before the reload: %d active sessions, want 1", n)
	}
	next := runningConfig(h)
	next.Backends[0].ConnectTimeout *= 2 // a changed backend: new pools and health
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	if n := active(); n != 1 {
		t.Errorf("after the reload: %d active sessions, want the 1 still open", n)
	}
	// Moved to another server and back: the session still counts there.
	moved := runningConfig(h)
	moved.Backends[0].Address = loopback.Serve(t, loopback.Echo)
	if err := h.srv.Reload(context.Background(), &moved); err != nil {
		t.Fatal(err)
	}
	if n := active(); n != 0 {
		t.Errorf("on the new server: %d active sessions, want 0", n)
	}
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	if n := active(); n != 1 {
		t.Errorf("the server put back: %d active sessions, want the 1 still open on it", n)
	}
	c.Close()
	h.record(t)
	for deadline := time.Now().Add(5 * time.Second); active() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d active sessions after the only one ended", active())
		}
	}
}

// A reload that moves an http1 backend to another address: a client
// connection open across it (a load balancer's keep-alive connection,
// which may never end on its own) has its next request answered as before,
// with Connection: close, and ends; its next connection reaches the new
// address. So the old server serves it for one exchange at most, or
// until idle_timeout for a connection idle meanwhile. Also when the
// client's next request comes a while after a reload that followed its
// last answer at once: the session, which looks at the connection 20 ms
// after an answer on the loops (at once on a goroutine), closed it idle
// then, and the request on its way was lost (late_data).
func TestHTTP1ReloadEndsKeepAliveConnectionsOfAReplacedBackend(t *testing.T) {
	for _, pause := range []time.Duration{0, 100 * time.Millisecond} {
		reloadEndsKeepAlive(t, pause)
	}
}

func reloadEndsKeepAlive(t *testing.T, pause time.Duration) {
	say := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }
	}
	oldO, newO := startOrigin(t, say("old")), startOrigin(t, say("new"))
	h := startProxy(t, config.Listener{IdleTimeout: time.Minute, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(oldO.addr))
	c := dialClient(t, h.addr, false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	io.WriteString(c, get)
	if status, b, closing := readBody(t, br); status != 200 || string(b) != "old" || closing {
		t.Fatalf("before the reload: %d %q closing %v; want 200 old, kept", status, b, closing)
	}
	next := runningConfig(h)
	next.Backends[0].Address = newO.addr
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause) // the client's pause before its next request
	io.WriteString(c, get)
	if status, b, closing := readBody(t, br); status != 200 || string(b) != "old" || !closing {
		t.Errorf("pause %v: on the connection open across the reload: %d %q closing %v; want 200 old, Connection: close", pause, status, b, closing)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("pause %v: after that response: %v, want EOF", pause, err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 2 {
		t.Errorf("pause %v: record: outcome %s (%v), %d requests; want ok, 2", pause, td.Outcome, td.Err, td.BackRequests)
	}
	got := roundTrips(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
	if got[0] != "200 new" {
		t.Errorf("a new connection after the reload got %q, want 200 new", got)
	}
	h.record(t)
}

// An http1 client connection idle across a reload that replaced its
// backend, with nothing looking at it meanwhile, ends at idle_timeout,
// recorded as such on both relays (a goroutine said draining), nothing
// cut. (One looked at before, as a loop does 20 ms after an exchange,
// ends then, as draining.)
func TestHTTP1IdleAcrossAReloadEndsAtIdleTimeout(t *testing.T) {
	oldO, newO := startOrigin(t, hello), startOrigin(t, hello)
	h := startProxy(t, config.Listener{IdleTimeout: time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(oldO.addr))
	c := dialClient(t, h.addr, false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if status, _, closing := readBody(t, br); status != 200 || closing {
		t.Fatalf("before the reload: %d closing %v; want 200, kept", status, closing)
	}
	time.Sleep(200 * time.Millisecond) // the client's pause: well past a loop's 20 ms look, well before idle_timeout
	next := runningConfig(h)
	next.Backends[0].Address = newO.addr
	if err := h.srv.Reload(context.Background(), &next); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection: %v, want EOF", err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.Reason != policy.ReasonIdle || td.Front.Cut {
		t.Errorf("record: outcome %s (%v), front reason %q cut %v; want ok, %q, nothing cut", td.Outcome, td.Err, td.Front.Reason, td.Front.Cut, policy.ReasonIdle)
	}
}

// A connection accepted with the listener's configuration of before a
// reload that replaced its backend, whose old backend the reload retired
// and stopped before the session counted in on it: the session is served
// by the new backend, on both relays. It was refused (dial_failed:
// backend connection pool closed), and its count's Add raced the
// retirement's Wait (a WaitGroup's data race). The hook reloads at that
// moment and waits for the old backend's pools to stop.
func TestReloadAsAConnectionIsAcceptedServesIt(t *testing.T) {
	// The hook is set before the accept loops start, and reaches the
	// test's reload through a channel: the loops read it unlocked.
	reload := make(chan func(), 1)
	acceptedHook = func() {
		select {
		case f := <-reload:
			f()
		default:
		}
	}
	t.Cleanup(func() { acceptedHook = nil })
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(httpBackend(t, true)))
	next := runningConfig(h)
	next.Backends[0].Pool.Warm = 1 // a change: the backend is replaced
	reload <- func() {
		h.srv.mu.Lock()
		old := h.srv.backends["app"]
		h.srv.mu.Unlock()
		if err := h.srv.Reload(context.Background(), &next); err != nil {
			t.Error(err)
			return
		}
		for deadline := time.Now().Add(5 * time.Second); !old.retired.Load(); runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Error("the replaced backend's pools did not stop within 5s")
				return
			}
		}
	}
	if _, err := get(t, h.addr, false); err != nil {
		t.Fatalf("a connection accepted as a reload replaced its backend: %v", err)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("record: outcome %s (%v), want ok", td.Outcome, td.Err)
	}
}

// A server ejected on a backend a reload replaced comes back, by its
// revive time, only on the current backend: reading the figures (a
// scrape) logs "server back" once, not once more for each replaced
// backend whose servers take no session (a review saw seven identical
// lines at one scrape after six reloads).
func TestScrapeAfterReloadsSaysServerBackOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens: a dial is refused and ejects
	be := defaultBackend(closed)
	be.Name, be.Protocol, be.ConnectTimeout = "app", config.ProtocolTCP, time.Second
	be.SendProxyProtocol = config.SendOff
	be.Health = config.Health{Check: config.HealthOff, EjectAfter: 1, Interval: 50 * time.Millisecond}
	ln0 := config.Listener{Name: "web", Backend: "app", Listen: "127.0.0.1:0", IdleTimeout: 5 * time.Second,
		ProxyProtocol: config.ProxyProtocolOff, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
	cfg := &config.Config{Listeners: []config.Listener{ln0}, Backends: []config.Backend{be}, Log: config.Log{Teardown: "all"},
		Auto: config.Defaults().Auto, Relay: testRelay}
	core, logged := observer.New(zapcore.InfoLevel)
	srv, err := New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	addr := srv.Addrs()[0].String()
	for i := range 4 {
		if c, err := net.Dial("tcp", addr); err == nil {
			io.ReadAll(c) // refused: dial_failed
			c.Close()
		}
		next := *cfg
		next.Backends = []config.Backend{be}
		next.Backends[0].ConnectTimeout = time.Duration(i+2) * time.Second // a change: replaced
		if err := srv.Reload(context.Background(), &next); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // past the revive time of every ejection: nothing signals it
	srv.Servers()
	if n := logged.FilterMessageSnippet("server back").Len(); n > 1 {
		t.Errorf("one read of the figures logged %d lines saying the server is back, want at most 1 (the current backend's)", n)
	}
}
