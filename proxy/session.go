package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// session is one accepted connection, from intake to its teardown record.
type session struct {
	srv   *Server
	ln    *config.Listener
	bk    *backend // its configuration is bk.cfg
	sv    *server  // the server in use, once one gave a connection
	front *net.TCPConn
	start time.Time
	td    *Teardown
}

func (s *Server) newSession(lc *listenerConf, c *net.TCPConn) *session {
	ln, be := &lc.cfg, &lc.be.cfg
	td := &Teardown{
		ID: s.nextID.Add(1), Listener: ln.Name, Backend: be.Name, ProxyProtocol: "none",
		Front:       newLegRecord(policy.Front, ln.Close.TimeWait),
		Back:        newLegRecord(policy.Back, be.Close.TimeWait),
		BackConnect: -1, Outcome: OutcomeOK,
	}
	td.Front.Local, td.Front.Peer = addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	td.Client = td.Front.Peer
	td.OriginalDst = interceptedDst(c, ln.Intercept)
	return &session{srv: s, ln: ln, bk: lc.be, front: c, start: time.Now(), td: td}
}

// run carries the session to its end and returns its record. A panic is
// recovered into outcome internal_error: one session never takes the
// process down.
func (ss *session) run(drainCtx context.Context, kill <-chan struct{}) (td *Teardown) {
	td = ss.td
	defer func() {
		if p := recover(); p != nil {
			ss.refuse(OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
			td.Front.TimeWait = policy.SideNone
		}
		td.Duration = time.Since(ss.start)
		ss.leave(true)
	}()
	in, err := readIntake(ss.front, ss.ln)
	if err != nil {
		ss.refuse(OutcomeBadProxyHeader, err)
		return td
	}
	td.ProxyProtocol = in.version
	if in.version == "none" && td.OriginalDst.IsValid() {
		in.dest = td.OriginalDst // what a PROXY header sent on names
	}
	if in.version != "none" && in.client != td.Front.Peer {
		td.Client, td.LB = in.client, td.Front.Peer
	}
	if ss.bk.cfg.Protocol == config.ProtocolHTTP1 {
		fr := in.reader
		if fr == nil {
			fr = bufio.NewReader(ss.front)
		}
		ss.serveHTTP1(drainCtx, fr, drainCtx.Done(), kill)
		return td
	}
	back, err := ss.takeBackend(in)
	if err != nil {
		ss.refuse(dialOutcome(err), err)
		td.Back.Close = policy.CloseError
		return td
	}
	ss.relay(back.TCPConn, drainCtx.Done(), kill)
	ss.sv.pool.Release(back)
	return td
}

func dialOutcome(err error) Outcome {
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return OutcomePortsExhausted
	case errors.Is(err, pool.ErrPoolExhausted):
		return OutcomePoolExhausted
	case errors.Is(err, syscall.EAFNOSUPPORT):
		return OutcomeFamilyMismatch
	}
	return OutcomeDialFailed
}

// refuse ends the front leg with an RST before any byte was relayed: the
// client learns at once, and no side keeps TIME-WAIT.
func (ss *session) refuse(o Outcome, err error) {
	ss.td.Outcome, ss.td.Err = o, err
	_ = ss.front.SetLinger(0)
	_ = ss.front.Close()
	ss.td.Front.RSTOut = time.Since(ss.start)
	ss.td.Front.Close = policy.CloseReset
}

// acquire takes a connection to one of the backend's servers: the one the
// balancer picks for the client, else the next, each tried at most once, so
// that a failed dial moves the session on before any of its bytes reached a
// backend. Each try is bounded by connect_timeout. An http1 session keeps
// the server it got while that server gives connections.
func (ss *session) acquire() (*pool.Conn, error) {
	var lastErr error
	kept := ss.sv
	if kept != nil {
		c, err := ss.try(kept)
		if err == nil {
			return c, nil
		}
		lastErr = err
		ss.leave(false)
	}
	for _, sv := range ss.bk.order(ss.td.Client.Addr()) {
		if sv == kept {
			continue
		}
		c, err := ss.try(sv)
		if err == nil {
			ss.sv = sv
			sv.active.Add(1)
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// try takes a connection from sv's pool, noting it in the record.
func (ss *session) try(sv *server) (*pool.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ss.bk.cfg.ConnectTimeout)
	defer cancel()
	if ss.bk.cfg.Source == config.SourceClient {
		ctx = pool.WithSource(ctx, ss.td.Client.Addr())
	}
	ss.td.BackTries++
	ss.td.BackServer = sv.addr
	return sv.pool.Get(ctx)
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
	switch {
	case ss.td.Outcome == OutcomeBackendReset:
		ss.srv.passive(ss.bk.cfg.Name, ss.sv, false, ss.td.Err)
	case ended && ss.td.Outcome == OutcomeOK && ss.td.Back.BytesIn > 0:
		ss.srv.passive(ss.bk.cfg.Name, ss.sv, true, nil)
	}
	ss.sv = nil
}

// takeBackend takes a warm connection from a server's pool or dials one,
// sends the PROXY header if configured and the bytes read past the
// client's header.
func (ss *session) takeBackend(in intake) (*pool.Conn, error) {
	t0 := time.Now()
	back, err := ss.acquire()
	ss.td.BackConnect = time.Since(t0)
	if err != nil {
		return nil, err
	}
	ss.td.BackPooled = back.Pooled
	ss.td.Back.Local, ss.td.Back.Peer = addrPort(back.LocalAddr()), addrPort(back.RemoteAddr())
	if ss.bk.cfg.SendProxyProtocol != config.SendOff {
		if _, err := proxyHeader(ss.bk.cfg.SendProxyProtocol, in).WriteTo(back); err != nil {
			ss.dropBackend(back)
			return nil, fmt.Errorf("send PROXY header to %s: %w", ss.sv.addr, err)
		}
	}
	if b := in.leftover(); len(b) > 0 {
		n, err := back.Write(b)
		ss.td.Front.BytesIn += int64(n)
		ss.td.Back.BytesOut += int64(n)
		if err != nil {
			ss.dropBackend(back)
			return nil, fmt.Errorf("write to backend %s: %w", ss.sv.addr, err)
		}
	}
	return back, nil
}

// newLeg makes the session's front or back leg over conn, with that leg's
// close policy and record.
func (ss *session) newLeg(name policy.Leg, conn *net.TCPConn) *leg {
	l := &leg{name: name, start: ss.start, auto: ss.srv.auto, conn: conn, pol: ss.ln.Close, rec: &ss.td.Front}
	if name == policy.Back {
		l.pol, l.rec = ss.bk.cfg.Close, &ss.td.Back
	}
	return l
}

// dropBackend resets a backend connection that failed before the relay.
func (ss *session) dropBackend(c *pool.Conn) {
	ss.sv.pool.Discard(c)
}

func (ss *session) relay(back *net.TCPConn, drain, kill <-chan struct{}) {
	td := ss.td
	front, bk := ss.newLeg(policy.Front, ss.front), ss.newLeg(policy.Back, back)
	r := newRelay(front, bk, ss.ln.IdleTimeout, drain, kill)
	r.run()
	td.Outcome, td.Err = r.outcome, r.err
}
