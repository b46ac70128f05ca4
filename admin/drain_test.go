package admin

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// drainServer is a fakeServer that can drain.
type drainServer struct {
	fakeServer
	drains  atomic.Int64
	live    atomic.Int64
	drained chan struct{}
}

func (d *drainServer) Drain()                   { d.drains.Add(1); d.serving.Store(false) }
func (d *drainServer) Drained() <-chan struct{} { return d.drained }
func (d *drainServer) Live() int64              { return d.live.Load() }

// servingDrainable serves an Admin in front of a serving drainServer and
// returns its base URL and the server.
func servingDrainable(t testing.TB) (string, *drainServer) {
	t.Helper()
	base, srv, _ := servingDrainableLogged(t, zaptest.NewLogger(t))
	return base, srv
}

// servingDrainableLogged is servingDrainable with the log lines kept.
func servingDrainableLogged(t testing.TB, log *zap.Logger) (string, *drainServer, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	a := New(testConfig("127.0.0.1:0", liveBackend(t)), zap.New(zapcore.NewTee(log.Core(), core)))
	base := serve(t, a)
	srv := &drainServer{drained: make(chan struct{})}
	srv.serving.Store(true)
	a.Attach(srv)
	return base, srv, logs
}

func post(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// POST /drain turns /readyz to 503 "draining" at once and drains the
// proxy; with wait it answers when the sessions are gone, or 503 when the
// wait ran out; other methods get 405.
func TestDrainEndpoint(t *testing.T) {
	base, srv, logs := servingDrainableLogged(t, zaptest.NewLogger(t))
	srv.live.Store(2)
	readyz(t, base, http.StatusOK, "ready")

	if code, _ := get(t, base+"/drain"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain: %d, want 405", code)
	}
	if code, body := post(t, base+"/drain?wait=soon"); code != http.StatusBadRequest {
		t.Errorf("wait=soon: %d %q, want 400", code, body)
	}
	if srv.drains.Load() != 0 {
		t.Fatal("drained by a refused request")
	}
	if code, body := post(t, base+"/drain"); code != http.StatusAccepted || !strings.Contains(body, "2 sessions open") {
		t.Errorf("POST /drain: %d %q, want 202 with 2 sessions open", code, body)
	}
	readyz(t, base, http.StatusServiceUnavailable, "draining")
	if code, body := post(t, base+"/drain?wait=50ms"); code != http.StatusServiceUnavailable || !strings.Contains(body, "2 sessions still open") {
		t.Errorf("wait=50ms with sessions open: %d %q, want 503", code, body)
	}
	time.AfterFunc(100*time.Millisecond, func() { srv.live.Store(0); close(srv.drained) })
	if code, body := post(t, base+"/drain?wait=5s"); code != http.StatusOK || body != "drained\n" {
		t.Errorf("wait=5s: %d %q, want 200 drained", code, body)
	}
	if n := srv.drains.Load(); n != 3 {
		t.Errorf("Drain called %d times, want 3", n)
	}
	// The log tells a drain's end, or a wait that ran out, with the count.
	if n := logs.FilterMessage("drain: the wait asked for ran out with sessions open").FilterField(zap.Int64("sessions", 2)).Len(); n != 1 {
		t.Errorf("%d log lines of the wait that ran out with 2 sessions, want 1", n)
	}
	if n := logs.FilterMessage("drained: every session ended").Len(); n != 1 {
		t.Errorf("%d log lines of the drain's end, want 1", n)
	}
}

// Draining takes the pod out of service: a client off loopback may not.
func TestDrainOnlyFromLoopback(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", liveBackend(t)), zaptest.NewLogger(t))
	srv := &drainServer{drained: make(chan struct{})}
	a.Attach(srv)
	for addr, want := range map[string]int{"10.0.0.7:4711": http.StatusForbidden, "[::1]:4711": http.StatusAccepted, "127.0.0.1:4711": http.StatusAccepted} {
		req := httptest.NewRequest(http.MethodPost, "/drain", nil)
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		a.handler().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("from %s: %d, want %d", addr, rec.Code, want)
		}
	}
	if n := srv.drains.Load(); n != 2 {
		t.Errorf("Drain called %d times, want 2", n)
	}
}

// Idle keep-alive clients of the admin listener are closed after the idle
// timeout, and past the connection cap a new client waits (in the
// kernel's backlog, holding no descriptor) until a slot frees.
func TestAdminBoundsIdleConnections(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", liveBackend(t)), zaptest.NewLogger(t))
	a.limits = httpLimits{readHeader: time.Second, read: time.Second, write: time.Second, idle: 400 * time.Millisecond, maxConns: 4}
	addr := strings.TrimPrefix(serve(t, a), "http://")
	var idle []*bufio.Reader
	for range a.limits.maxConns {
		_, br := loopback.KeepAliveGet(t, addr, "/healthz")
		idle = append(idle, br)
	}
	c, err := net.Dial("tcp", addr) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	t0 := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the client past the cap: %v", err)
	}
	resp.Body.Close()
	// The cap held it back until the idle timeout closed one of the four.
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("the client past the cap was served after %s, before the idle timeout freed a slot", d)
	}
	for i, br := range idle {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection %d: %v, want EOF after the idle timeout", i, err)
		}
	}
}

// With delay, /readyz fails at once but the listeners close only after
// it, so that clients routed here until the pod is seen unready are
// served; with wait too, the answer comes once the sessions are gone
// after the delay.
func TestDrainDelay(t *testing.T) {
	base, srv := servingDrainable(t)

	if code, body := post(t, base+"/drain?delay=later"); code != http.StatusBadRequest {
		t.Errorf("delay=later: %d %q, want 400", code, body)
	}
	const delay = 300 * time.Millisecond
	t0 := time.Now()
	if code, body := post(t, base+"/drain?delay="+delay.String()); code != http.StatusAccepted || !strings.Contains(body, "close in 300ms") {
		t.Errorf("POST /drain?delay: %d %q, want 202", code, body)
	}
	readyz(t, base, http.StatusServiceUnavailable, "draining")
	if n := srv.drains.Load(); n != 0 && time.Since(t0) < delay {
		t.Fatalf("listeners closed %v after the request, before the delay", time.Since(t0))
	}

	base, srv = servingDrainable(t) // listeners open: the delay holds
	close(srv.drained)
	t1 := time.Now()
	if code, body := post(t, base+"/drain?delay=100ms&wait=5s"); code != http.StatusOK || body != "drained\n" {
		t.Errorf("delay=100ms&wait=5s: %d %q, want 200 drained", code, body)
	}
	if took := time.Since(t1); took < 100*time.Millisecond {
		t.Errorf("delay=100ms&wait=5s answered after %v, before the delay", took)
	}
	if n := srv.drains.Load(); n < 1 {
		t.Errorf("Drain called %d times after the delays, want at least 1", n)
	}
}

// A drain asked for during an earlier one's delay closes the listeners at
// its own delay when that comes first: without one, at once. An operator
// who drains by hand while a preStop hook waits gets what was asked.
func TestDrainAgainDuringDelay(t *testing.T) {
	base, srv := servingDrainable(t)

	if code, body := post(t, base+"/drain?delay=1h"); code != http.StatusAccepted {
		t.Fatalf("POST /drain?delay=1h: %d %q, want 202", code, body)
	}
	if n := srv.drains.Load(); n != 0 {
		t.Fatalf("listeners closed during the delay (%d drains)", n)
	}
	if code, body := post(t, base+"/drain"); code != http.StatusAccepted {
		t.Fatalf("POST /drain: %d %q, want 202", code, body)
	}
	if n := srv.drains.Load(); n != 1 {
		t.Errorf("after a drain without delay: %d drains, want 1 at once", n)
	}
}

// A drain command stopped during its delay (Ctrl-C on drain -delay D
// -wait) leaves the delay to run: the listeners used to close the moment
// its request went away.
func TestDrainDelayOutlivesItsClient(t *testing.T) {
	base, srv := servingDrainable(t)
	const delay = 700 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/drain?wait=5s&delay="+delay.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	for code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable; code, _ = get(t, base+"/readyz") {
		if time.Since(t0) > delay/2 {
			t.Fatalf("/readyz %d %v after the drain request, want 503 draining", code, time.Since(t0))
		}
	} // the request is in its delay
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the drain request was answered before its delay, not cancelled")
	}
	for time.Since(t0) < delay-100*time.Millisecond { // an absence: polled until just before the delay ends
		if n := srv.drains.Load(); n != 0 {
			t.Fatalf("listeners closed %v after the request, its client gone, before the delay of %v", time.Since(t0), delay)
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.drains.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("listeners still open %v after a drain with a delay of %v", time.Since(t0), delay)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Once the listeners are closed, a drain with a delay has none to keep:
// it says so and its wait does not sit out the delay.
func TestDrainDelayAfterDrained(t *testing.T) {
	base, srv := servingDrainable(t)
	if code, body := post(t, base+"/drain"); code != http.StatusAccepted {
		t.Fatalf("POST /drain: %d %q, want 202", code, body)
	}
	if code, body := post(t, base+"/drain?delay=1h"); code != http.StatusAccepted || strings.Contains(body, "close in") {
		t.Errorf("POST /drain?delay=1h with the listeners closed: %d %q, want 202 without a delay", code, body)
	}
	close(srv.drained)
	if code, body := post(t, base+"/drain?delay=1h&wait=1h"); code != http.StatusOK || body != "drained\n" {
		t.Errorf("POST /drain?delay=1h&wait=1h with the listeners closed and no session: %d %q, want 200 drained at once", code, body)
	}
}
