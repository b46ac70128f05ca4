package evloop

import (
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
)

// Server is a running prototype: Loops event loops, each with its own
// epoll set and SO_REUSEPORT listener, all relaying to one backend.
type Server struct {
	addr      netip.AddrPort
	loops     []*loop
	wg        sync.WaitGroup
	live      atomic.Int64 // sessions open, over all loops
	closeOnce sync.Once
}

// Start binds the listeners and starts one goroutine per loop; Close
// stops them. It is Listen and Serve in one, as a benchmark wants.
func Start(cfg Config) (*Server, error) {
	be, err := sockaddr4(cfg.Backend)
	if err != nil {
		return nil, err
	}
	n := cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	s := &Server{addr: cfg.Listen}
	for i := range n {
		l, err := newLoop(s, cfg, be, s.addr)
		if err != nil {
			for _, l := range s.loops {
				l.release()
			}
			return nil, err
		}
		if i == 0 {
			if s.addr, err = boundAddr(l.lfd); err != nil {
				l.release()
				return nil, err
			}
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			l.run()
		}()
	}
	return s, nil
}

// Addr is the address every loop listens on.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Sessions is the number of sessions open now, over all loops.
func (s *Server) Sessions() int { return int(s.live.Load()) }

// Close wakes every loop by closing its epoll descriptor (it waits in Go's
// netpoller, so this returns its wait at once), then waits until each
// loop has closed its listener and reset its open sessions: a session
// cut short never ends with a clean FIN. It is idempotent.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		for _, l := range s.loops {
			if err := l.ep.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}
