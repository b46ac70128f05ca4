package admin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

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
	a := New(testConfig("127.0.0.1:0", liveBackend(t)), zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &drainServer{drained: make(chan struct{})}
	srv.serving.Store(true)
	a.Attach(srv)
	return base, srv
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
	base, srv := servingDrainable(t)
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
