package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
)

// listener is one accepting socket. Its configuration can be swapped by
// Reload; each accepted connection takes the one current at accept.
type listener struct {
	ln   net.Listener
	addr netip.AddrPort // ln's address
	wait *os.File       // what bare accepts wait on (relay = "loop"), the loops' listening socket; nil otherwise
	// unlisten stops the relay loops accepting on wait (listenOnLoops);
	// nil when a goroutine accepts.
	unlisten func()
	backoff  atomic.Int64 // the loops' accept backoff, a time.Duration
	// stopped is set by close: an *os.File's wait ends with an error
	// that is not net.ErrClosed.
	stopped atomic.Bool
	conf    atomic.Pointer[listenerConf]
	open    atomic.Int64 // sessions open on it
}

// listenerConf is what a session needs from its listener: the listener's
// settings and the backend they name.
type listenerConf struct {
	cfg config.Listener
	be  *backend
}

// bindLocked opens a socket for every listener in cfg, keeping the sockets
// of keep whose address is unchanged; on error it closes what it opened.
func (s *Server) bindLocked(ctx context.Context, cfg *config.Config, keep []*listener) ([]*listener, error) {
	byAddr := map[string]*listener{}
	for _, l := range keep {
		byAddr[listenKey(l.conf.Load().cfg)] = l
	}
	var lns, opened []*listener
	for _, lcfg := range cfg.Listeners {
		key := listenKey(lcfg)
		l := byAddr[key]
		if l == nil {
			lc := listenConfig(lcfg.Intercept)
			ln, err := lc.Listen(ctx, "tcp", lcfg.Listen)
			if err != nil {
				for _, o := range opened {
					o.close()
				}
				return nil, fmt.Errorf("listener %q: listen %s: %w", lcfg.Name, lcfg.Listen, err)
			}
			l = &listener{ln: ln, addr: addrPort(ln.Addr())}
			opened = append(opened, l)
			if s.relayLoop {
				if l.wait, err = bareWaiter(ln); err != nil {
					for _, o := range opened {
						o.close()
					}
					return nil, fmt.Errorf("listener %q: %w", lcfg.Name, err)
				}
			}
		}
		delete(byAddr, key)
		lns = append(lns, l)
	}
	return lns, nil
}

// configureLocked points every listener at its configuration and backend.
func (s *Server) configureLocked(cfg *config.Config, lns []*listener) {
	for i, l := range lns {
		l.conf.Store(&listenerConf{cfg: cfg.Listeners[i], be: s.backends[cfg.Listeners[i].Backend]})
	}
}

// close stops l listening.
func (l *listener) close() { l.closeTaking(false) }

// closeLocked stops l listening (s.mu held), and serves the connections
// its kernel had completed that no accept took yet: closing a listening
// socket resets them, though each client's connect succeeded and its
// request may be on its way. Their sessions start on a goroutine that
// s.accepts counts (Drain waits for it), once they were taken: those
// that complete in between the last take and the close are reset by it.
func (s *Server) closeLocked(l *listener) {
	queued := l.closeTaking(true)
	if len(queued) == 0 {
		return
	}
	s.accepts.Add(1)
	go func() {
		defer s.accepts.Done()
		for _, q := range queued {
			s.acceptedFD(l, q.fd, q.peer, -1)
		}
	}()
}

// queued is a connection taken from a listening socket as it closed.
type queued struct {
	fd   int
	peer netip.AddrPort
}

// closeTaking stops l listening, once, taking first (take) the
// connections that wait in its accept queue.
func (l *listener) closeTaking(take bool) []queued {
	if l.stopped.Swap(true) {
		return nil
	}
	if l.unlisten != nil {
		l.unlisten() // no loop accepts on wait once it returns
	}
	var q []queued
	if take {
		q = takeQueued(l.ln)
	}
	_ = l.ln.Close()
	if l.wait != nil {
		_ = l.wait.Close()
	}
	return q
}

func (s *Server) startAcceptLocked(l *listener) {
	if s.listenOnLoops(l) {
		return
	}
	s.accepts.Add(1)
	go func() {
		defer s.accepts.Done()
		if err := s.acceptLoop(l); err != nil {
			select {
			case s.fatal <- err:
			default:
			}
		}
	}()
}

// acceptLoop: net.ErrClosed is a clean end; a temporary error (out of file
// descriptors) backs off and goes on; anything else ends the listener.
func (s *Server) acceptLoop(l *listener) error {
	var backoff time.Duration
	for {
		var c *net.TCPConn
		fd, peer, err := -1, netip.AddrPort{}, error(nil)
		if l.wait != nil && s.bare(l.conf.Load()) {
			fd, peer, err = acceptFD(l.wait)
		} else {
			var nc net.Conn
			if nc, err = l.ln.Accept(); err == nil {
				c = nc.(*net.TCPConn)
			}
		}
		lc := l.conf.Load()
		if errors.Is(err, net.ErrClosed) || err != nil && l.stopped.Load() {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				if outOfFiles(err) {
					s.releaseFiles()
				}
				s.log.Warn("accept failed; backing off", zap.String("listener", lc.cfg.Name), zap.Duration("backoff", backoff), zap.Error(err))
				if !s.sleepUnlessDone(backoff) {
					return nil
				}
				continue
			}
			return fmt.Errorf("listener %q: accept: %w", lc.cfg.Name, err)
		}
		backoff = 0
		if c == nil {
			s.acceptedFD(l, fd, peer, -1)
			continue
		}
		s.accepted(l, lc, c, fd, peer, -1)
	}
}

// acceptedFD starts the session of a bare descriptor accepted on l by a
// goroutine (home -1) or a relay loop; a reload may have made l's
// sessions ones that need a *net.TCPConn meanwhile.
func (s *Server) acceptedFD(l *listener, fd int, peer netip.AddrPort, home int) {
	lc := l.conf.Load()
	if s.bare(lc) {
		s.accepted(l, lc, nil, fd, peer, home)
		return
	}
	var c *net.TCPConn
	var err error
	if frontConnHook != nil {
		err = frontConnHook()
	}
	if err == nil {
		c, err = fdConn(fd) // fd still open when it fails
	}
	if err != nil {
		// Out of descriptors: refused, recorded and counted as any
		// connection the proxy accepted.
		if outOfFiles(err) {
			s.releaseFiles()
		}
		s.obs.Accepted(lc.cfg.Name)
		ss := s.newSession(l, lc, nil, fd, peer)
		ss.refuse(engine.OutcomeError, fmt.Errorf("accept: make a connection of a bare descriptor: %w", err))
		s.recordRefused(ss, home)
		return
	}
	s.accepted(l, lc, c, -1, peer, home)
}

// frontConnHook, when set (tests), fails acceptedFD's fdConn as a process
// out of descriptors does.
var frontConnHook func() error

// bare tells whether the listener's connections go to the relay loops
// as bare descriptors (acceptFD), which read a PROXY header there too:
// tcp sessions, and http1 sessions that run on the loops (loopHTTP1). An
// intercepted address, or an http1 backend whose sessions cannot run on
// the loops, need a *net.TCPConn.
func (s *Server) bare(lc *listenerConf) bool {
	if s.loops.Load() == nil || lc.cfg.Intercept == config.InterceptTProxy || lc.cfg.Intercept == config.InterceptRedirect {
		return false
	}
	return lc.be.cfg.Protocol == config.ProtocolTCP || loopHTTP1(lc.be.cfg)
}

// acceptedHook, when set (tests), runs as a session accepted with a
// listener's configuration counts in on its backend.
var acceptedHook func()

// useBackend counts a session accepted with lc in on lc's backend, or
// on the backend of the configuration a reload gave l since, if lc's is
// unused for good, and returns the configuration it counted on. nil: the
// reload removed l and its backend as the connection came; c or fd was
// refused.
func (s *Server) useBackend(l *listener, lc *listenerConf, c *net.TCPConn, fd int, peer netip.AddrPort, home int) *listenerConf {
	for !lc.be.use() {
		next := l.conf.Load()
		if next == lc {
			ss := s.newSession(l, lc, c, fd, peer)
			ss.refuse(engine.OutcomeError, fmt.Errorf("backend %q left the configuration as the connection came", lc.be.cfg.Name))
			s.recordRefused(ss, home)
			return nil
		}
		lc = next
	}
	return lc
}

// sleepUnlessDone waits d and reports whether the server is still up.
func (s *Server) sleepUnlessDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// recordRefused writes the record of a session refused at its accept;
// on a loop (home 0 or more) from a goroutine: a record sink may block,
// a loop must not.
func (s *Server) recordRefused(ss *session, home int) {
	if td := ss.rec.Done(); home >= 0 {
		go s.record(td)
	} else {
		s.record(td)
	}
}

// accepted starts a session for c, or for the bare descriptor fd from
// peer when c is nil, or resets it past max_connections. home is the
// relay loop that accepted it (and runs it when it can), or -1: a
// goroutine did.
func (s *Server) accepted(l *listener, lc *listenerConf, c *net.TCPConn, fd int, peer netip.AddrPort, home int) {
	s.obs.Accepted(lc.cfg.Name)
	if max := lc.cfg.MaxConnections; max > 0 && l.open.Load() >= int64(max) {
		ss := s.newSession(l, lc, c, fd, peer)
		ss.refuse(engine.OutcomeOverLimit, fmt.Errorf("max_connections %d reached", max))
		s.obs.Rejected(lc.cfg.Name, string(engine.OutcomeOverLimit))
		s.recordRefused(ss, home)
		return
	}
	if acceptedHook != nil {
		acceptedHook()
	}
	if lc = s.useBackend(l, lc, c, fd, peer, home); lc == nil {
		return
	}
	l.open.Add(1)
	s.sessions.Add(1)
	s.live.Add(1)
	s.trim.started()
	if c == nil {
		// A bare session may start its relay from here (its end counts
		// it out, as run's does).
		ss := s.newSession(l, lc, nil, fd, peer)
		ss.home = home
		started := false
		switch {
		case lc.be.cfg.Protocol == config.ProtocolHTTP1:
			started = ss.startHTTP1Loop()
		case lc.cfg.ProxyProtocol != config.ProxyProtocolOff:
			started = ss.startTCPIntake()
		default:
			started = ss.atOnce(s.drainCtx, s.drainBegun, s.kill)
		}
		if !started {
			go ss.run(s.drainCtx, s.drainBegun, s.kill)
		}
		return
	}
	go func() { s.newSession(l, lc, c, -1, netip.AddrPort{}).run(s.drainCtx, s.drainBegun, s.kill) }() // its end counts it out
}

// record logs td (as log.teardown samples) and hands it on.
func (s *Server) record(td *engine.Teardown) {
	s.auto.countPlaced(td)
	s.obs.Ended(td)
	if (*s.sample.Load())(td) {
		s.records.Info("teardown", td.Fields()...)
	}
	if s.onTeardown != nil {
		s.onTeardown(td)
	}
}
