package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// session is one accepted connection, from intake to its teardown record.
// The engine carries out its close; the session takes the backend and, in
// http1 mode, the exchanges.
type session struct {
	srv   *Server
	l     *listener // the one that accepted front: counts it open
	ln    *config.Listener
	bk    *backend // its configuration is bk.cfg
	sv    *server  // the server in use, once one gave a connection
	front *net.TCPConn
	bare  int        // the front as a bare descriptor (acceptFD) when front is nil; else -1
	home  int        // the relay loop that accepted the front (Loops.Listen), or -1
	back  *pool.Conn // a tcp session's backend connection, once it has one; an http1 exchange's on a goroutine while it holds one
	order []*server  // the servers in the balancer's order, when atOnce asked it
	rec   *engine.Recorder
	eng   *engine.Session
}

// newSession makes the session of c, or of the bare descriptor fd from
// peer when c is nil (a bare listener: no intercept, no PROXY header).
func (s *Server) newSession(l *listener, lc *listenerConf, c *net.TCPConn, fd int, peer netip.AddrPort) *session {
	ln, be := &lc.cfg, &lc.be.cfg
	rec := engine.NewRecorder(s.nextID.Add(1), ln.Name, be.Name, ln.Close.TimeWait, be.Close.TimeWait)
	if c != nil {
		rec.Accepted(addrPort(c.LocalAddr()), addrPort(c.RemoteAddr()), interceptedDst(c, ln.Intercept))
		fd = -1
	} else {
		rec.Accepted(localFD(fd, l.addr), peer, netip.AddrPort{})
	}
	return &session{srv: s, l: l, ln: ln, bk: lc.be, front: c, bare: fd, home: -1, rec: rec}
}

// frontFD is the client's socket descriptor (the session keeps it), or
// -1.
func (ss *session) frontFD() int {
	if ss.front == nil {
		return ss.bare
	}
	fd, err := engine.ConnFD(ss.front)
	if err != nil {
		return -1
	}
	return fd
}

// refuse ends the front, which has had no byte relayed, with an RST.
func (ss *session) refuse(o engine.Outcome, err error) {
	switch {
	case ss.front != nil:
		engine.Refuse(ss.rec, ss.front, o, err)
	case ss.bare >= 0:
		engine.RefuseFD(ss.rec, ss.bare, o, err)
		ss.bare = -1
	}
}

// run carries the session to its end (end: the record and the server's
// counts), unless the relay loops took its relay over: then it returns at
// once and the loop ends it. A panic is recovered into outcome
// internal_error: one session never takes the process down. drainCtx ends
// when shutdown_timeout ran out, begun when draining began (an http1
// session then ends after its exchange).
func (ss *session) run(drainCtx, begun context.Context, kill <-chan struct{}) {
	handedOver := false
	defer ss.finally(&handedOver)
	if ss.back != nil { // atOnce took a warm connection; the loops refused the relay
		handedOver = ss.relay(engine.Pending{})
		return
	}
	ss.eng = ss.engine(drainCtx, kill)
	in := intake{version: "none", client: ss.rec.Client(), dest: ss.rec.Record().Front.Local}
	if ss.front == nil && ss.ln.ProxyProtocol != config.ProxyProtocolOff { // bare, for the loops, which did not take it
		if err := ss.unbareFront(); err != nil {
			ss.refuse(engine.OutcomeError, fmt.Errorf("read PROXY header: %w", err))
			return
		}
	}
	if ss.front != nil {
		var err error
		if in, err = readIntake(ss.front, ss.ln, drainCtx); err != nil {
			ss.refuse(intakeOutcome(err), err)
			return
		}
	}
	ss.rec.Intake(in.version, in.client)
	if in.version == "none" && ss.rec.OriginalDst().IsValid() {
		in.dest = ss.rec.OriginalDst() // what a PROXY header sent on names
	}
	if ss.bk.cfg.Protocol == config.ProtocolHTTP1 {
		if err := ss.unbareFront(); err != nil {
			ss.refuse(engine.OutcomeError, fmt.Errorf("http1 on a goroutine: %w", err))
			return
		}
		fr := in.reader
		if fr == nil {
			fr = frontReader(ss.front)
		}
		// The first head is due idle_timeout after the accept, a PROXY
		// header's wait included, as on the loops.
		until := ss.rec.Start().Add(ss.ln.IdleTimeout)
		handedOver = ss.serveHTTP1(fr, drainCtx, begun, until, nil, false) // parked: resume ends it
		return
	}
	handedOver = ss.connectAndRelay(in, in.leftover())
}

// finally ends a session's goroutine: a panic is recovered into outcome
// internal_error, and the session ends unless the loops took it over.
func (ss *session) finally(handedOver *bool) {
	if p := recover(); p != nil {
		ss.panicked(p)
	}
	if !*handedOver {
		ss.end()
	}
}

// connectAndRelay takes a backend connection for a tcp session whose
// intake is done (up: the client's bytes read past a PROXY header) and
// relays; true: the loops took the relay over.
func (ss *session) connectAndRelay(in intake, up []byte) (handedOver bool) {
	back, err := ss.takeBackend(in)
	if err != nil {
		ss.refuse(dialOutcome(err), err)
		return false
	}
	ss.back = back
	return ss.relay(engine.Pending{Up: up})
}

// runAfterIntake is run for a tcp session whose PROXY header a loop read
// (tcpIntake), with no backend connection ready there: on a goroutine
// of its own.
func (ss *session) runAfterIntake(in intake, up []byte) {
	handedOver := false
	defer ss.finally(&handedOver)
	handedOver = ss.connectAndRelay(in, up)
}

func (ss *session) engine(drainCtx context.Context, kill <-chan struct{}) *engine.Session {
	a := ss.srv.auto
	return &engine.Session{Rec: ss.rec, Front: ss.ln.Close, Back: ss.bk.cfg.Close, Idle: ss.ln.IdleTimeout,
		Auto: a.stateFn, Hold: a.holdFn, Placing: a.placingFn, Drain: drainCtx.Done(), Kill: kill}
}

// panicked ends a session a panic interrupted: outcome internal_error
// with the panic's stack, and the backend connection it held reset.
func (ss *session) panicked(p any) {
	ss.refuse(engine.OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
	ss.dropBack()
}

// dropBack resets a backend connection that a panic left unrelayed: the
// pool frees its slot only, and a bare one no collection would close.
func (ss *session) dropBack() {
	if b := ss.back; b != nil && (b.TCPConn != nil || b.Bare != nil) {
		ss.back = nil
		ss.sv.pool.Discard(b)
	}
}

// relay relays the session, which has its backend connection: on the
// loops (true: they end it), or else on this goroutine, which returns
// once the session is over.
func (ss *session) relay(p engine.Pending) (handedOver bool) {
	if ss.handOver(p) {
		return true
	}
	back := ss.back
	if err := ss.unbare(); err != nil {
		ss.back = nil
		ss.sv.pool.Discard(back)
		ss.refuse(engine.OutcomeError, fmt.Errorf("relay on goroutines: %w", err))
		return false
	}
	ss.eng.Relay(ss.front, back.TCPConn, p)
	return false
}

// atOnce starts a bare session's relay on the loops where it was accepted
// (the relay loop that accepted it, or the accepting goroutine), when
// nothing on its way can wait: its backend connection is
// a warm one of the server the balancer puts first, or a new one the
// kernel connected inside connect(2) (pool.Pool.DialNow), and no PROXY
// header goes to it. The session then costs no goroutine of its own. False: none
// of that was possible and nothing was done; run does it all. A session
// whose relay the loops refuse after all goes on on a goroutine (run). A
// panic is recovered as run recovers it.
func (ss *session) atOnce(drainCtx, begun context.Context, kill <-chan struct{}) (started bool) {
	if ss.bare < 0 || !sharedPool(ss.bk.cfg) || ss.bk.cfg.SendProxyProtocol != config.SendOff || ss.srv.loops.Load() == nil {
		return false
	}
	defer func() {
		if p := recover(); p != nil {
			ss.panicked(p)
			ss.end()
			started = true
		}
	}()
	t0 := time.Now()
	ss.order = ss.bk.order(ss.rec.Client().Addr()) // the balancer is asked once a session
	sv := ss.order[0]
	c := sv.pool.GetIdleFor(ss.home)
	if c == nil {
		c = sv.pool.DialNow() // a backend on this host: connected inside the call
	}
	if c == nil {
		return false
	}
	ss.eng = ss.engine(drainCtx, kill)
	ss.rec.Intake("none", ss.rec.Client())
	ss.rec.Trying(sv.addr)
	ss.connected(c)
	ss.rec.Connecting(time.Since(t0))
	ss.use(sv)
	ss.back = c
	if !ss.handOver(engine.Pending{}) {
		go ss.run(drainCtx, begun, kill)
	}
	return true
}

// unbare makes the session's bare sockets *net.TCPConns, for a relay on
// goroutines after the loops refused it. A bare back is first forgotten
// by the loop that watches it.
func (ss *session) unbare() error {
	if err := ss.unbareFront(); err != nil {
		return err
	}
	if ss.back.Bare != nil {
		return ss.srv.unbare(ss.back)
	}
	return nil
}

// unbareFront makes a bare front a *net.TCPConn.
func (ss *session) unbareFront() error {
	if ss.front != nil {
		return nil
	}
	c, err := fdConn(ss.bare)
	if err != nil {
		return err
	}
	ss.front, ss.bare = c, -1
	return nil
}

// unbareHook, when set (tests), fails unbare as a process out of
// descriptors does.
var unbareHook func() error

// unbare makes a bare backend connection a *net.TCPConn, first forgotten
// by the loop that watches it.
func (s *Server) unbare(b *pool.Conn) error {
	if unbareHook != nil {
		if err := unbareHook(); err != nil {
			return err
		}
	}
	if ls := s.loops.Load(); ls != nil {
		ls.Forget(b.Bare.Home, b.Bare.FD)
	}
	c, err := fdConn(b.Bare.FD)
	if err != nil {
		return err
	}
	b.SetConn(c)
	return nil
}

// handOver gives the relay to the server's loops (relay = "loop"), which
// start end on a goroutine of its own once both sockets are closed: not
// on the loop's, as end writes the record, and a record sink that blocks
// (a full pipe, a stalled disk) would stop every session on the loop. False:
// there are no loops, or they refused and the connections are untouched;
// the session relays them itself.
func (ss *session) handOver(p engine.Pending) bool {
	s := ss.srv
	ls := s.loops.Load()
	if ls == nil {
		return false
	}
	front, back := engine.Bare(ss.bare, -1), engine.TCP(ss.back.TCPConn)
	if ss.front != nil {
		front = engine.TCP(ss.front)
	}
	if b := ss.back.Bare; b != nil {
		back = engine.Bare(b.FD, b.Home)
	}
	if err := ls.RelayOn(ss.home, ss.eng, front, back, p, func() { go ss.end() }); err != nil {
		s.loopRefused.Do(func() {
			s.log.Warn(`relay = "loop": the event loops refused a session; such sessions relay on goroutines`, zap.Error(err))
		})
		return false
	}
	// The loop owns the sockets: what is left here is kept until end, so
	// it holds no closed connection.
	ss.front, ss.bare = nil, -1
	ss.back.Detach()
	return true
}

// end is a session's epilogue, once its sockets are closed: on the
// session's goroutine, or on one the relay loop started for it. It
// frees the backend connection's slot and the server, completes the
// record, frees the listener's slot before the record says the session
// ended, writes the record and counts the session out.
func (ss *session) end() {
	s := ss.srv
	if ss.back != nil {
		ss.sv.pool.Release(ss.back)
	}
	ss.leave(true)
	td := ss.rec.Done()
	ss.l.open.Add(-1)
	ss.bk.done() // before the record: a sink that blocks holds no pool
	s.writing.Add(1)
	s.record(td)
	s.writing.Add(-1)
	s.trim.ended()
	s.live.Add(-1)
	s.sessions.Done()
}

// sendHeader writes a PROXY header to a backend connection. A bare one
// takes it in one write: it is new or idle, its send buffer empty.
func sendHeader(c *pool.Conn, h *proxyproto.Header) error {
	if c.Bare == nil {
		_, err := h.WriteTo(c)
		return err
	}
	b, err := h.Format()
	if err != nil {
		return err
	}
	n, err := unix.Write(c.Bare.FD, b)
	switch {
	case err != nil:
		return os.NewSyscallError("write", err)
	case n < len(b):
		return fmt.Errorf("wrote %d of the header's %d bytes", n, len(b))
	}
	return nil
}

func dialOutcome(err error) engine.Outcome {
	switch {
	case errors.Is(err, errClientGone):
		return engine.OutcomeClientReset
	case errors.Is(err, errDialCut):
		return engine.OutcomeDrained
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return engine.OutcomePortsExhausted
	case errors.Is(err, pool.ErrPoolExhausted):
		return engine.OutcomePoolExhausted
	case errors.Is(err, syscall.EAFNOSUPPORT):
		return engine.OutcomeFamilyMismatch
	}
	return engine.OutcomeDialFailed
}

// acquire takes a connection to one of the backend's servers: the one the
// balancer picks for the client, else the next, each tried at most once, so
// that a failed dial moves the session on before any of its bytes reached a
// backend. Each try is bounded by connect_timeout. An http1 session keeps
// the server it got while that server gives connections.
func (ss *session) acquire() (*pool.Conn, error) {
	ss.rec.Acquiring()
	t0 := time.Now()
	defer func() { ss.rec.Connecting(time.Since(t0)) }()
	var lastErr error
	kept := ss.sv
	if kept != nil {
		c, err := ss.try(kept)
		if err == nil {
			return c, nil
		}
		ss.leave(false)
		if errors.Is(err, errClientGone) {
			return nil, err
		}
		lastErr = err
	}
	order := ss.order
	if order == nil {
		order = ss.bk.order(ss.rec.Client().Addr())
	}
	ss.order = nil // an http1 session's next acquire asks again
	for _, sv := range order {
		if sv == kept {
			continue
		}
		c, err := ss.try(sv)
		if err == nil {
			ss.use(sv)
			return c, nil
		}
		if errors.Is(err, errClientGone) {
			return nil, err // no other server for a client that left
		}
		lastErr = err
	}
	return nil, lastErr
}

// try takes a connection from sv's pool, noting it in the record. An
// idle one needs no context (an http1 session takes one a request).
func (ss *session) try(sv *server) (*pool.Conn, error) {
	ss.rec.Trying(sv.addr)
	own := ss.bk.cfg.Source == config.SourceClient
	if !own {
		if c := sv.pool.GetIdle(); c != nil {
			ss.connected(c)
			return c, nil
		}
	}
	// Bounded by connect_timeout, and cut when shutdown_timeout ran out:
	// shutdown waits for every session's record, and a dial that
	// outlived it would hold the process past shutdown's bound.
	ctx, cancel := context.WithTimeout(ss.srv.drainCtx, ss.bk.cfg.ConnectTimeout)
	defer cancel()
	if own {
		ctx = pool.WithSource(ctx, ss.rec.Client().Addr())
	}
	w := clientWatch{cancel: cancel}
	ctx = pool.OnWait(ctx, func() { w.start(ss.frontFD()) })
	c, err := sv.pool.Get(ctx)
	w.stop()
	if at := w.fin(); err != nil && !at.IsZero() {
		ss.rec.PeerFINAt(policy.Front, at)
	}
	var ne net.Error
	switch {
	case err == nil:
		ss.connected(c)
	case w.gone():
		err = fmt.Errorf("%w: %w", errClientGone, err)
	case ss.srv.drainCtx.Err() != nil:
		err = fmt.Errorf("%w: %w", errDialCut, err)
	case own && errors.As(err, &ne) && ne.Timeout():
		err = fmt.Errorf("%w (source = \"client\": without the policy routing that `closeproxy transparent setup` installs, the backend's answers to the client's address never reach the proxy)", err)
	}
	return c, err
}

// errDialCut: shutdown_timeout ran out while a session waited for its
// backend connection (outcome drained).
var errDialCut = errors.New("shutdown_timeout ran out while dialing the backend")

// connected notes in the record the backend connection a try got.
func (ss *session) connected(c *pool.Conn) {
	local, peer := c.Addrs()
	ss.rec.Connected(c.Pooled, c.Reused, local, peer)
}

// use makes sv the session's server: it counts one session more.
func (ss *session) use(sv *server) {
	ss.sv = sv
	sv.active.Add(1)
}

// leave gives up the server in use: it counts a session less, and tells
// its health of a reset the server sent or, when the session ended (ended),
// of a session it served: only that clears a streak of failures. A dial
// that worked does not, or a server that accepts every connection and
// resets every session would never be ejected.
func (ss *session) leave(ended bool) {
	if ss.sv == nil {
		return
	}
	ss.sv.active.Add(-1)
	td := ss.rec.Record()
	switch {
	case td.Outcome == engine.OutcomeBackendReset:
		ss.srv.passive(ss.bk.cfg.Name, ss.sv, false, td.Err)
	case ended && td.Outcome == engine.OutcomeOK && td.Back.BytesIn > 0:
		ss.srv.passive(ss.bk.cfg.Name, ss.sv, true, nil)
	}
	ss.sv = nil
}

// takeBackend takes a warm connection from a server's pool or dials one,
// and sends the PROXY header if configured.
func (ss *session) takeBackend(in intake) (*pool.Conn, error) {
	back, err := ss.acquire()
	if err != nil {
		return nil, err
	}
	if ss.bk.cfg.SendProxyProtocol != config.SendOff {
		if err := sendHeader(back, proxyHeader(ss.bk.cfg.SendProxyProtocol, in)); err != nil {
			ss.sv.pool.Discard(back)
			return nil, fmt.Errorf("send PROXY header to %s: %w", ss.sv.addr, err)
		}
	}
	return back, nil
}
