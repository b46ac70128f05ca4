package demo

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/proxy"
)

// ports are the listening ports a run used: every row listens on new ones,
// so that no 4-tuple of a row can be one of an earlier row's.
type ports map[uint16]bool

// maxTries bounds the rebinding of a listener whose port is not new.
const maxTries = 5

// claim records a's port and reports whether it is new to the run.
func (u ports) claim(a netip.AddrPort) bool {
	if u[a.Port()] {
		return false
	}
	u[a.Port()] = true
	return true
}

// newBackend starts the embedded backend on a port new to the run.
func newBackend(used ports) (*backend, error) {
	for range maxTries {
		b, err := startBackend()
		if err != nil || used.claim(b.addr) {
			return b, err
		}
		b.close()
	}
	return nil, fmt.Errorf("listen backend: no new port in %d tries", maxTries)
}

// newProxy starts the proxy on a port new to the run.
func newProxy(ctx context.Context, sc scenario, backend netip.AddrPort, used ports) (*runningProxy, error) {
	for range maxTries {
		p, err := startProxy(ctx, sc, backend)
		if err != nil || used.claim(p.addr) {
			return p, err
		}
		p.stop()
	}
	return nil, fmt.Errorf("proxy listen: no new port in %d tries", maxTries)
}

// backend is the embedded HTTP server: net/http with keep-alive, so with
// "Connection: close" it ends first and otherwise it waits for the client.
type backend struct {
	addr    netip.AddrPort
	srv     *http.Server
	done    chan struct{}
	mu      sync.Mutex
	accepts map[netip.AddrPort]int // connections accepted, by the peer's address
}

func startBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen backend: %w", err)
	}
	body := []byte("hello from the embedded backend\n")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}),
		IdleTimeout: 30 * time.Second,
	}
	b := &backend{addr: ln.Addr().(*net.TCPAddr).AddrPort(), srv: srv, done: make(chan struct{}), accepts: map[netip.AddrPort]int{}}
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.mu.Lock()
			b.accepts[c.RemoteAddr().(*net.TCPAddr).AddrPort()]++
			b.mu.Unlock()
		}
	}
	go func() { defer close(b.done); srv.Serve(ln) }()
	return b, nil
}

// accepted is how many connections the backend accepted from each peer
// address so far.
func (b *backend) accepted() map[netip.AddrPort]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.accepts)
}

func (b *backend) close() {
	b.srv.Close()
	<-b.done
}

type runningProxy struct {
	addr   netip.AddrPort
	srv    *proxy.Server
	recs   *recorder
	served chan error
}

// startProxy runs the real proxy on the embedded defaults, changing only
// the addresses and the two close targets.
func startProxy(ctx context.Context, sc scenario, backend netip.AddrPort) (*runningProxy, error) {
	text := fmt.Sprintf(`
[[listener]]
name = "demo"
listen = "127.0.0.1:0"
backend = "app"
  [listener.close]
  time_wait = %q
[[backend]]
name = "app"
address = %q
  [backend.close]
  time_wait = %q
`, sc.front, backend, sc.back)
	cfg, err := config.Parse([]byte(text), "demo.toml")
	if err != nil {
		return nil, fmt.Errorf("demo configuration: %w", err)
	}
	p := &runningProxy{recs: newRecorder(), served: make(chan error, 1)}
	p.srv, err = proxy.New(cfg, zap.NewNop(), proxy.WithTeardownHook(p.recs.add))
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	if err := p.srv.Listen(ctx); err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p.addr = p.srv.Addrs()[0].(*net.TCPAddr).AddrPort()
	go func() { p.served <- p.srv.Serve(ctx) }()
	return p, nil
}

func (p *runningProxy) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
	<-p.served
}
