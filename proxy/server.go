package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/park"
	"github.com/closeproxy/closeproxy/pool"
	"github.com/closeproxy/closeproxy/twwatch"
)

// Server runs the listeners of a configuration and swaps it on Reload
// without dropping established sessions. New → Listen (optional) → Serve →
// Reload (any number of times) → Shutdown.
//
// Error contract: a session's errors end that session and are in its
// record; a listener's fatal accept error ends Serve; Reload's errors leave
// the running configuration untouched.
type Server struct {
	log        *zap.Logger
	records    *zap.Logger // teardown records; log unless WithRecordLog
	onTeardown func(*engine.Teardown)
	obs        Observer
	sample     atomic.Pointer[sampler]
	auto       *autoWatch
	netAdmin   func() (bool, error) // whether IP_TRANSPARENT is allowed; a seam for tests
	watch      *twwatch.Watcher     // the kernel's TIME-WAIT figures, for auto
	ownWatch   bool                 // the server made watch: it runs and updates it

	mu        sync.Mutex
	cfg       *config.Config
	listeners []*listener                 // the current ones, in configuration order
	backends  map[string]*backend         // the current ones, by name
	replaced  replacedPools               // pools of backends a reload replaced, by name
	actives   map[serverKey]*atomic.Int64 // sessions on each server, across reloads (activeCount)
	serving   bool                        // Serve runs: new listeners start accepting at once
	closed    bool
	done      chan struct{} // closed by Shutdown
	fatal     chan error
	accepts   sync.WaitGroup
	pools     sync.WaitGroup // pool runs, retirements and the server's own watcher
	autoStop  func()         // stops auto's samples; nil until some leg uses auto
	draining  bool           // Drain began: no listener accepts again
	// draining is done when Drain began: http1 sessions close idle
	// keep-alive connections and answer with Connection: close.
	drainBegun context.Context
	beginDrain context.CancelFunc
	drained    chan struct{} // closed when draining and no session is left
	shutOnce   sync.Once     // the first Shutdown runs; later ones wait for shutDone
	shutDone   chan struct{}

	sessions sync.WaitGroup
	live     atomic.Int64    // sessions not yet ended
	writing  atomic.Int64    // of live, sessions whose sockets are closed, writing their record
	drainCtx context.Context // done when shutdown_timeout ran out: end by policy
	drainNow context.CancelFunc
	kill     chan struct{} // closed when ending by policy took too long: reset
	nextID   atomic.Uint64
	lastGC   atomic.Int64 // unix nanoseconds of the last releaseFiles collection
	trim     trimmer

	// relayLoop is relay = "loop" as the server was made: a reload does
	// not change it. loops relay the tcp sessions from Serve until
	// Shutdown closes them; nil before Serve, without relayLoop, or when
	// they could not be made (sessions then relay on goroutines).
	relayLoop bool
	loops     atomic.Pointer[engine.Loops] // read by pools' dials too
	// parker holds the client sockets of http1 sessions idle between
	// requests (parkFirst); nil before Serve and where it cannot be made
	// (not Linux): those sessions then wait on their goroutines.
	parker atomic.Pointer[park.Parker]
	// h1s are the http1 sessions, for draining and shutdown to interrupt;
	// stopH1 ends their watchers (Serve starts them).
	h1s         h1Sessions
	stopH1      func()
	loopRefused sync.Once // the first refusal is logged
}

// Option adjusts a Server.
type Option func(*Server)

// WithTeardownHook calls f with every record after it is logged (demo,
// tests). f runs on the session's goroutine (with relay = "loop", one
// started for its epilogue) and should not block: the session is counted
// out only after it.
func WithTeardownHook(f func(*engine.Teardown)) Option {
	return func(s *Server) { s.onTeardown = f }
}

// WithRecordLog writes teardown records to l instead of the server's log,
// so that the log's level cannot drop them (log.records).
func WithRecordLog(l *zap.Logger) Option {
	return func(s *Server) { s.records = l }
}

// New checks that cfg can be served; it opens no socket and starts nothing.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Server, error) {
	s := &Server{log: log, records: log, obs: nopObserver{}, netAdmin: hasNetAdmin, kill: make(chan struct{}), fatal: make(chan error, 1), done: make(chan struct{}),
		drained: make(chan struct{}), shutDone: make(chan struct{})}
	s.drainCtx, s.drainNow = context.WithCancel(context.Background())
	s.drainBegun, s.beginDrain = context.WithCancel(context.Background())
	for _, o := range opts {
		o(s)
	}
	smp, err := s.check(cfg)
	if err != nil {
		return nil, err
	}
	s.sample.Store(&smp)
	s.cfg, s.relayLoop = cfg, cfg.Relay == "loop"
	s.backends = s.buildBackends(cfg, nil)
	if s.watch == nil {
		s.watch, s.ownWatch = twwatch.New(cfg, log), true
	}
	s.auto = newAutoWatch(cfg.Auto, log, s.obs)
	return s, nil
}

// check refuses what the configuration's validation cannot see from here,
// and returns the teardown sampler cfg asks for: stored only once cfg is
// taken, so that a refused reload changes nothing.
func (s *Server) check(cfg *config.Config) (sampler, error) {
	names := map[string]bool{}
	for _, b := range cfg.Backends {
		names[b.Name] = true
	}
	for _, l := range cfg.Listeners {
		if !names[l.Backend] {
			return nil, fmt.Errorf("listener %q: backend %q is not defined", l.Name, l.Backend)
		}
	}
	if err := requireNetAdmin(cfg, s.netAdmin); err != nil {
		return nil, err
	}
	return teardownSampler(cfg.Log.Teardown)
}

// Listen binds every listener, so that errors (an address in use) come
// before serving. Serve calls it if it was not called.
func (s *Server) Listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners != nil || s.closed {
		return nil
	}
	lns, err := s.bindLocked(ctx, s.cfg, nil)
	if err != nil {
		return err
	}
	s.configureLocked(s.cfg, lns)
	s.listeners = lns
	return nil
}

// Addrs returns the bound address of each listener, in configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.ln.Addr()
	}
	return addrs
}

// Serve accepts on every listener until Shutdown. It returns nil after a
// shutdown, or the first listener's fatal accept error.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed { // shut down before it started: nothing to serve
		s.mu.Unlock()
		return nil
	}
	if s.serving {
		s.mu.Unlock()
		return errors.New("serve: already serving")
	}
	s.serving = true
	s.startLoopsLocked()
	if p, err := park.New(); err == nil {
		s.parker.Store(p)
	} else if !errors.Is(err, errors.ErrUnsupported) {
		s.log.Warn("http1: no parker; idle keep-alive sessions wait on goroutines of their own", zap.Error(err))
	}
	s.stopH1 = s.watchHTTP1()
	for _, b := range s.backends {
		s.runPoolLocked(b)
	}
	for _, l := range s.listeners {
		if !s.draining {
			s.startAcceptLocked(l)
		}
	}
	s.startAutoLocked()
	s.mu.Unlock()
	var err error
	select {
	case err = <-s.fatal:
		s.closeListeners()
	case <-s.done:
	}
	s.accepts.Wait()
	return err
}

// loopsPerCPU: one loop per CPU Go may use. Sessions spread over the
// loops (engine.Loops.Place); spread over two loops per CPU, a loop with
// work waited for a CPU behind another, and a keep-alive request's 99th
// percentile under ab -k -c 64 grew from 5-6 ms to 13-16.
const loopsPerCPU = 1

// startLoopsLocked starts the relay loops of relay = "loop", loopsPerCPU
// per CPU Go may use. They start with Serve, like every goroutine of the server,
// so that a Server that is made (and bound) but never served holds none;
// Shutdown closes them once every session ended. If they cannot be made,
// sessions relay on goroutines.
func (s *Server) startLoopsLocked() {
	if !s.relayLoop {
		return
	}
	ls, err := engine.NewLoops(loopsPerCPU*runtime.GOMAXPROCS(0), s.drainCtx.Done(), s.kill)
	if err != nil {
		s.log.Warn(`relay = "loop": no event loops; sessions relay on goroutines`, zap.Error(err))
		return
	}
	s.loops.Store(ls)
}

// Serving reports that the listeners accept and neither a drain nor
// shutdown has begun: the readiness of the proxy itself.
func (s *Server) Serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving && !s.closed && !s.draining
}

// releaseFiles runs a collection, at most every 100 ms, when descriptors
// run out: a descriptor that only a finalizer closes (a connection dropped
// by a panic, a pipe of Go's own splice pool should anything still use it)
// is given back. The relay's splice pipes need none: each is closed with
// its direction.
func (s *Server) releaseFiles() {
	now := time.Now().UnixNano()
	last := s.lastGC.Load()
	if now-last < int64(100*time.Millisecond) || !s.lastGC.CompareAndSwap(last, now) {
		return
	}
	runtime.GC() // the pool's items survive one collection (its victim cache)
	runtime.GC() // and go with the second; their finalizers close the pipes
}

// dialer is how the pool of a server dials; the Observer sees each dial,
// and the server's health each failed one (a local failure is ours, never
// the server's).
func (s *Server) dialer(b config.Backend, sv *server) pool.DialFunc {
	backend := b.Name
	return func(ctx context.Context, address string) (*net.TCPConn, error) {
		t0 := time.Now()
		c, err := dialBackend(ctx, b, address)
		handedOn := false
		defer func() {
			// A panic below (the session recovers it) must not leave the
			// connection open until GC.
			if !handedOn && c != nil {
				c.Close()
			}
		}()
		s.obs.Dialed(backend, time.Since(t0), err)
		if outOfFiles(err) {
			s.releaseFiles()
		}
		// A failed dial counts against the server; one that worked proves
		// little (sessions that it served clear the count: session.leave).
		// A local failure is ours, and a dial given up by its caller no
		// verdict at all.
		if err != nil && !pool.IsLocal(err) && !errors.Is(ctx.Err(), context.Canceled) {
			s.passive(backend, sv, false, err)
		}
		if err != nil {
			return nil, err
		}
		handedOn = true
		return c.(*net.TCPConn), nil
	}
}

// dialBackend dials one connection to b at address: directly when
// address is an IP address (dialDirect: a backend that spoke and reset at
// once loses nothing), from the client's address with source = "client",
// else with Go's dialer (a host name, or a system without direct dials).
func dialBackend(ctx context.Context, b config.Backend, address string) (net.Conn, error) {
	if to, err := netip.ParseAddrPort(address); err == nil && to.Addr().Zone() == "" {
		var from netip.Addr
		if b.Source == config.SourceClient {
			if from, err = clientSource(ctx, address); err != nil {
				return nil, err
			}
		}
		c, err := dialDirect(ctx, to, from, b.TCPKeepAlive)
		switch {
		case err == nil:
			return c, nil
		case !errors.Is(err, errors.ErrUnsupported):
			return nil, err
		}
	}
	d, err := sourceDialer(ctx, b.Source, address)
	if err != nil {
		return nil, err
	}
	if b.TCPKeepAlive {
		d.KeepAliveConfig = goKeepAlive
	}
	return d.DialContext(ctx, "tcp", address)
}

// sharedPool tells whether b's sessions can relay on the loops with any
// connection of its pools: a tcp backend, dialed from the proxy's own
// address (with source = "client" a connection serves one client only).
// Such pools dial bare for the loops (bareDialer), and a session that
// finds a warm connection starts its relay at once (atOnce).
func sharedPool(b config.Backend) bool {
	return b.Protocol == config.ProtocolTCP && b.Source != config.SourceClient
}

// goKeepAlive is Go's default keep-alive for TCP connections: probes
// after 15 s idle, every 15 s, 9 unanswered ones end the connection. Every
// client connection has it (from the listening socket); backend
// connections with backend.tcp_keepalive.
var goKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}

// bareDialer is how the pool of a server dials for the relay loops
// (relay = "loop", a tcp backend named by IP address without a zone,
// source = "proxy"):
// a bare socket that the loops connect (dialBare). Until the loops run,
// and for a backend named by host name, the pool dials with dialer.
func (s *Server) bareDialer(b config.Backend, sv *server) pool.BareDialFunc {
	if !s.relayLoop || !sharedPool(b) && !loopHTTP1(b) {
		return nil
	}
	backend := b.Name
	return func(ctx context.Context, address string) (*pool.Bare, error) {
		ls := s.loops.Load()
		to, err := netip.ParseAddrPort(address)
		if ls == nil || err != nil || to.Addr().Zone() != "" {
			return nil, nil
		}
		// A context done before the dial: pool.Pool.DialNow, which takes
		// only a connect done inside the call; its context's error is no
		// dial of the backend's.
		waitless := ctx.Err() != nil
		t0 := time.Now()
		c, err := dialBare(ctx, ls, to, b.TCPKeepAlive)
		handedOn := false
		defer func() {
			if !handedOn && c != nil { // a panic below (the session recovers it)
				_ = engine.CloseFD(c.FD)
			}
		}()
		if !waitless || !errors.Is(err, ctx.Err()) {
			s.obs.Dialed(backend, time.Since(t0), err)
		}
		if outOfFiles(err) {
			s.releaseFiles()
		}
		if err != nil && !pool.IsLocal(err) && !errors.Is(ctx.Err(), context.Canceled) {
			s.passive(backend, sv, false, err)
		}
		handedOn = true
		return c, err
	}
}

// passive feeds what a session or a dial saw of sv to its health, and logs
// an ejection.
func (s *Server) passive(backend string, sv *server, ok bool, err error) {
	if sv.health.Passive(ok, time.Now()) {
		s.log.Warn("server ejected: consecutive dial failures or resets",
			zap.String("backend", backend), zap.String("server", sv.addr), zap.Error(err))
	}
}
