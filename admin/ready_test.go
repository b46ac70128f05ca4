package admin

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
)

// liveBackend returns the address of a loopback listener: the kernel
// completes probe handshakes on its backlog.
func liveBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// deadBackend returns a loopback address nothing listens on.
func deadBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func readyz(t testing.TB, base string, wantCode int, wantBody string) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	if code != wantCode || !strings.Contains(body, wantBody) {
		t.Fatalf("/readyz: %d %q, want %d containing %q", code, body, wantCode, wantBody)
	}
}

func TestReadyzLifecycle(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", liveBackend(t)), zaptest.NewLogger(t))
	base := serve(t, a)
	readyz(t, base, http.StatusServiceUnavailable, "proxy not started")

	srv := &fakeServer{}
	a.Attach(srv)
	readyz(t, base, http.StatusServiceUnavailable, "proxy not serving")

	srv.serving.Store(true)
	readyz(t, base, http.StatusOK, "ready") // by a probe dial

	a.SetDraining()
	readyz(t, base, http.StatusServiceUnavailable, "draining")
}

func TestReadyzDeadBackend(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", deadBackend(t)), zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &fakeServer{}
	srv.serving.Store(true)
	a.Attach(srv)
	readyz(t, base, http.StatusServiceUnavailable, "backend app: probe backend")
	readyz(t, base, http.StatusServiceUnavailable, "connection refused") // the cached probe
}

func TestReadyzRecentDialNeedsNoProbe(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", deadBackend(t)), zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &fakeServer{}
	srv.serving.Store(true)
	a.Attach(srv)
	a.Dialed("app", time.Millisecond, nil) // the proxy's own dial answered
	readyz(t, base, http.StatusOK, "ready")
}

func TestReadyzProbeIsCached(t *testing.T) {
	addr := deadBackend(t)
	a := New(testConfig("127.0.0.1:0", addr), zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &fakeServer{}
	srv.serving.Store(true)
	a.Attach(srv)
	readyz(t, base, http.StatusServiceUnavailable, "connection refused")
	// The backend comes up, but the failed probe stands for probeEvery.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken again meanwhile: %v", addr, err)
	}
	defer ln.Close()
	readyz(t, base, http.StatusServiceUnavailable, "connection refused")
}

// A backend no listener names is no session's: /readyz does not wait for
// it, down as it is (the example configuration has one).
func TestReadyzIgnoresUnusedBackend(t *testing.T) {
	cfg := testConfig("127.0.0.1:0", liveBackend(t))
	cfg.Backends = append(cfg.Backends, config.Backend{Name: "spare", Address: deadBackend(t), ConnectTimeout: time.Second})
	a := New(cfg, zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &fakeServer{}
	srv.serving.Store(true)
	a.Attach(srv)
	readyz(t, base, http.StatusOK, "ready")

	cfg.Listeners = append(cfg.Listeners, config.Listener{Name: "spare", Listen: "127.0.0.1:0", Backend: "spare"})
	a.Reconfigure(cfg) // a listener now names it: its readiness counts
	readyz(t, base, http.StatusServiceUnavailable, "backend spare")
}
