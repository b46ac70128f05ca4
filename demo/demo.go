package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/proxy"
)

// Options size the demonstration. Zero values take the defaults.
type Options struct {
	Conns       int // connections per row; default 200
	Concurrency int // clients at once; default 100
}

// scenario is one row: a workload through a pair of close targets, or
// straight to the backend when direct.
type scenario struct {
	front, back string // as a user writes them; empty when direct
	closer      string // "client" or "server": who ends the HTTP exchange
	direct      bool
}

var scenarios = []scenario{
	{closer: "server", direct: true},
	{front: "proxy", back: "backend", closer: "server"},
	{front: "client", back: "backend", closer: "server"},
	{front: "nowhere", back: "nowhere", closer: "server"},
	{front: "proxy", back: "proxy", closer: "server"},
	{closer: "client", direct: true},
	{front: "proxy", back: "backend", closer: "client"},
	{front: "nowhere", back: "backend", closer: "client"},
	{front: "proxy", back: "proxy", closer: "client"},
}

// counts is TIME-WAIT per holder: the client, the proxy on each leg, the
// backend.
type counts struct{ client, proxyFront, proxyBack, backend int }

type row struct {
	sc              scenario
	ok, failed      int
	kernel, records counts
}

// Run runs every scenario and prints the table to w.
func Run(ctx context.Context, w io.Writer, o Options) error {
	if o.Conns == 0 {
		o.Conns = 200
	}
	if o.Concurrency == 0 {
		o.Concurrency = 100
	}
	fmt.Fprintf(w, "closeproxy demo: %d short HTTP connections per row on loopback, %d at a time.\n", o.Conns, o.Concurrency)
	fmt.Fprintln(w, "TIME-WAIT is counted in the kernel (sock_diag) by port, beside what the teardown records claim.")
	fmt.Fprintln(w)
	var rows []row
	for _, sc := range scenarios {
		r, err := runScenario(ctx, sc, o)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name(), err)
		}
		rows = append(rows, r)
	}
	printTable(w, rows)
	for _, r := range rows {
		if !r.sc.direct && r.kernel != r.records {
			return errors.New("the kernel and the teardown records disagree (rows marked NO)")
		}
		if r.failed > 0 {
			return fmt.Errorf("%d client requests failed", r.failed)
		}
	}
	return nil
}

func (sc scenario) name() string {
	if sc.direct {
		return "direct (no proxy)"
	}
	return sc.front + " / " + sc.back
}

func runScenario(ctx context.Context, sc scenario, o Options) (row, error) {
	r := row{sc: sc}
	be, err := startBackend()
	if err != nil {
		return r, err
	}
	defer be.close()
	target := be.addr
	var recs *recorder
	if !sc.direct {
		p, err := startProxy(ctx, sc, be.addr)
		if err != nil {
			return r, err
		}
		defer p.stop()
		target, recs = p.addr, p.recs
	}
	r.ok, r.failed = burst(target, sc.closer == "client", o)
	if recs != nil {
		if err := recs.wait(r.ok+r.failed, 10*time.Second); err != nil {
			return r, err
		}
		r.records = recs.counts()
	}
	ports := []uint16{be.addr.Port(), target.Port()}
	if err := settle(ports, 5*time.Second); err != nil {
		return r, err
	}
	r.kernel, err = kernelCounts(target, be.addr, sc.direct)
	return r, err
}

// backend is the embedded HTTP server: net/http with keep-alive, so with
// "Connection: close" it ends first and otherwise it waits for the client.
type backend struct {
	addr netip.AddrPort
	srv  *http.Server
	done chan struct{}
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
		ErrorLog:    nil,
	}
	b := &backend{addr: ln.Addr().(*net.TCPAddr).AddrPort(), srv: srv, done: make(chan struct{})}
	go func() { defer close(b.done); srv.Serve(ln) }()
	return b, nil
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
		return nil, err
	}
	p := &runningProxy{recs: newRecorder(), served: make(chan error, 1)}
	p.srv, err = proxy.New(cfg, zap.NewNop(), proxy.WithTeardownHook(p.recs.add))
	if err != nil {
		return nil, err
	}
	if err := p.srv.Listen(ctx); err != nil {
		return nil, err
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

// recorder collects the records' TIME-WAIT claims.
type recorder struct {
	mu     sync.Mutex
	n      int
	c      counts
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) add(td *engine.Teardown) {
	r.mu.Lock()
	r.n++
	switch td.Front.TimeWait {
	case policy.SideClient:
		r.c.client++
	case policy.SideProxy:
		r.c.proxyFront++
	}
	switch td.Back.TimeWait {
	case policy.SideProxy:
		r.c.proxyBack++
	case policy.SideBackend:
		r.c.backend++
	}
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) counts() counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

// wait returns once n records arrived, or fails after timeout.
func (r *recorder) wait(n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		got := r.n
		r.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-r.signal:
		case <-deadline:
			return fmt.Errorf("%d of %d teardown records after %s", got, n, timeout)
		}
	}
}
