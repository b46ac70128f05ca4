package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
)

// Server runs every listener of a configuration. New → Listen (optional) →
// Serve → Shutdown.
type Server struct {
	cfg        *config.Config
	log        *zap.Logger
	backends   map[string]*config.Backend
	onTeardown func(*Teardown)
	sample     func(*Teardown) bool
	obs        Observer

	mu        sync.Mutex
	listeners []net.Listener
	closed    bool

	pools     map[string]*pool.Pool
	poolsStop context.CancelFunc
	poolsDone sync.WaitGroup

	serving  atomic.Bool // every listener accepts
	stopping atomic.Bool // Shutdown began

	sessions sync.WaitGroup
	drainCtx context.Context // done when shutdown_timeout ran out: end by policy
	drainNow context.CancelFunc
	kill     chan struct{} // closed when ending by policy took too long: reset
	nextID   atomic.Uint64
}

// Option adjusts a Server.
type Option func(*Server)

// WithTeardownHook calls f with every record after it is logged (demo,
// tests). f runs on the session's goroutine and must not block.
func WithTeardownHook(f func(*Teardown)) Option {
	return func(s *Server) { s.onTeardown = f }
}

// New checks that cfg can be served; it opens no socket and starts nothing.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, log: log, backends: map[string]*config.Backend{}, pools: map[string]*pool.Pool{},
		kill: make(chan struct{}), obs: nopObserver{}}
	s.drainCtx, s.drainNow = context.WithCancel(context.Background())
	for _, o := range opts {
		o(s)
	}
	for i := range cfg.Backends {
		b := &cfg.Backends[i]
		s.backends[b.Name] = b
		s.pools[b.Name] = pool.New(pool.Config{Address: b.Address, ConnectTimeout: b.ConnectTimeout,
			Warm: b.Pool.Warm, MaxIdleAge: b.Pool.MaxIdleAge, MaxConns: b.Pool.MaxConns},
			s.dialer(b.Name), log.With(zap.String("backend", b.Name)))
	}
	for _, l := range cfg.Listeners {
		if s.backends[l.Backend] == nil {
			return nil, fmt.Errorf("listener %q: backend %q is not defined", l.Name, l.Backend)
		}
	}
	sample, err := teardownSampler(cfg.Log.Teardown)
	if err != nil {
		return nil, err
	}
	s.sample = sample
	return s, nil
}

// Listen binds every listener, so that errors (an address in use) come
// before serving. Serve calls it if it was not called.
func (s *Server) Listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners != nil {
		return nil
	}
	var lc net.ListenConfig
	for _, l := range s.cfg.Listeners {
		ln, err := lc.Listen(ctx, "tcp", l.Listen)
		if err != nil {
			for _, open := range s.listeners {
				_ = open.Close()
			}
			s.listeners = nil
			return fmt.Errorf("listener %q: listen %s: %w", l.Name, l.Listen, err)
		}
		s.listeners = append(s.listeners, ln)
	}
	return nil
}

// Addrs returns the bound address of each listener, in configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.listeners))
	for i, ln := range s.listeners {
		addrs[i] = ln.Addr()
	}
	return addrs
}

// Serve accepts on every listener until Shutdown closes them. It returns nil
// after a shutdown, or the first listener's fatal accept error.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	lns := s.listeners
	s.mu.Unlock()
	s.startPools()
	errs := make(chan error, len(lns))
	for i, ln := range lns {
		go func() { errs <- s.acceptLoop(&s.cfg.Listeners[i], ln) }()
	}
	s.serving.Store(true)
	defer s.serving.Store(false)
	var first error
	for range lns {
		if err := <-errs; err != nil && first == nil {
			first = err
			s.closeListeners()
		}
	}
	return first
}

// acceptLoop: net.ErrClosed is a clean end; a temporary error backs off and
// goes on; anything else ends the listener.
func (s *Server) acceptLoop(l *config.Listener, ln net.Listener) error {
	var backoff time.Duration
	var open atomic.Int64 // sessions open on this listener
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", zap.String("listener", l.Name), zap.Duration("backoff", backoff), zap.Error(err))
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("listener %q: accept: %w", l.Name, err)
		}
		backoff = 0
		s.obs.Accepted(l.Name)
		if l.MaxConnections > 0 && open.Load() >= int64(l.MaxConnections) {
			s.overLimit(l, c.(*net.TCPConn))
			continue
		}
		open.Add(1)
		s.sessions.Add(1)
		go func() { defer open.Add(-1); s.serveConn(l, c.(*net.TCPConn)) }()
	}
}

func (s *Server) serveConn(l *config.Listener, c *net.TCPConn) {
	defer s.sessions.Done()
	s.record(s.newSession(l, c).run(s.drainCtx, s.kill))
}

// overLimit resets a connection beyond max_connections at once (no
// TIME-WAIT) and records it.
func (s *Server) overLimit(l *config.Listener, c *net.TCPConn) {
	ss := s.newSession(l, c)
	ss.refuse(OutcomeOverLimit, fmt.Errorf("max_connections %d reached", l.MaxConnections))
	ss.td.Duration = time.Since(ss.start)
	s.obs.Rejected(l.Name, string(OutcomeOverLimit))
	s.record(ss.td)
}

// record logs td (as log.teardown samples) and hands it on.
func (s *Server) record(td *Teardown) {
	s.obs.Ended(td)
	if s.sample(td) {
		s.log.Info("teardown", td.Fields()...)
	}
	if s.onTeardown != nil {
		s.onTeardown(td)
	}
}

// Shutdown stops accepting, lets live sessions finish until ctx ends, then
// ends the rest by their close policies. Sessions still open after the
// longest grace and drain of any leg (a peer that keeps sending while the
// proxy withholds its FIN) are reset (outcome drained), so Shutdown always
// returns. It returns nil: every session got its record.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopping.Store(true)
	s.closeListeners()
	defer s.stopPools()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.drainNow()
	t := time.NewTimer(s.policyBound())
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	s.log.Warn("sessions still open after ending by policy were reset", zap.Duration("waited", s.policyBound()))
	close(s.kill)
	<-done
	return nil
}

// policyBound is how long ending by policy may take: a grace and a drain
// on each leg, twice over (timers fire between 1× and 2×), plus a second.
func (s *Server) policyBound() time.Duration {
	var longest time.Duration
	for _, l := range s.cfg.Listeners {
		be := s.backends[l.Backend]
		longest = max(longest, l.Close.PeerFinGrace+l.Close.DrainTimeout+be.Close.PeerFinGrace+be.Close.DrainTimeout)
	}
	return 2*longest + time.Second
}

// Serving reports that every listener accepts and shutdown has not begun:
// the readiness of the proxy itself.
func (s *Server) Serving() bool { return s.serving.Load() && !s.stopping.Load() }

// PoolStats returns each backend's pool figures, by backend name.
func (s *Server) PoolStats() map[string]pool.Stats {
	out := make(map[string]pool.Stats, len(s.pools))
	for name, p := range s.pools {
		out[name] = p.Stats()
	}
	return out
}

// startPools runs every backend's pool until stopPools.
func (s *Server) startPools() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.poolsStop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.poolsStop = cancel
	for _, p := range s.pools {
		s.poolsDone.Add(1)
		go func() { defer s.poolsDone.Done(); p.Run(ctx) }()
	}
}

// stopPools closes the idle backend connections (by RST: they carry
// nothing) once no session uses them.
func (s *Server) stopPools() {
	s.mu.Lock()
	stop := s.poolsStop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.poolsDone.Wait()
}

// dialer is how the pool of a backend dials; the Observer sees each dial.
func (s *Server) dialer(backend string) pool.DialFunc {
	return func(ctx context.Context, address string) (*net.TCPConn, error) {
		var d net.Dialer
		t0 := time.Now()
		c, err := d.DialContext(ctx, "tcp", address)
		s.obs.Dialed(backend, time.Since(t0), err)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}

// teardownSampler reads log.teardown: all | errors | sample:<rate>. Records
// whose outcome is not ok are always kept.
func teardownSampler(mode string) (func(*Teardown) bool, error) {
	switch {
	case mode == "" || mode == "all":
		return func(*Teardown) bool { return true }, nil
	case mode == "errors":
		return func(t *Teardown) bool { return t.Outcome != OutcomeOK }, nil
	case strings.HasPrefix(mode, "sample:"):
		rate, err := strconv.ParseFloat(strings.TrimPrefix(mode, "sample:"), 64)
		if err != nil || rate <= 0 || rate > 1 {
			return nil, fmt.Errorf("log.teardown: %q: rate must be in (0, 1]", mode)
		}
		return func(t *Teardown) bool { return t.Outcome != OutcomeOK || rand.Float64() < rate }, nil
	}
	return nil, fmt.Errorf("log.teardown: %q is not one of all, errors, sample:<rate>", mode)
}
