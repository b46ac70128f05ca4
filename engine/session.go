package engine

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// Session is one proxied connection's close: its record, its legs'
// policies and its timers. The session's goroutine calls Relay, or End for
// each leg it ends alone; the engine then owns the legs until it closed
// them.
type Session struct {
	Rec   *Recorder
	Front config.Close  // the front leg's policy
	Back  config.Close  // the back leg's policy
	Idle  time.Duration // idle_timeout: Relay cuts a session in which no byte moved for this long
	// Auto gives time_wait = "auto" its figures for a leg toward peer;
	// nil: no pressure.
	Auto func(leg policy.Leg, peer netip.AddrPort) policy.AutoState
	// Hold is told when auto has a leg toward peer withhold its FIN: the
	// leg keeps its port until the session ends, and may then leave a
	// TIME-WAIT. The engine calls release once the session's sockets are
	// closed; nil: nobody counts.
	Hold func(leg policy.Leg, peer netip.AddrPort) (release func())
	// Placing is told when a leg using auto sends the first FIN: the proxy
	// is to hold that leg's TIME-WAIT, which the record can report only
	// once the peer's FIN has come, a round trip or a slow peer later. The
	// engine calls release once the session's sockets are closed; nil:
	// nobody counts.
	Placing func(leg policy.Leg, peer netip.AddrPort) (release func())
	// Drain is closed when shutdown_timeout ran out: what still flows is
	// cut, withheld FINs take their fallback, and what waits is given
	// DrainGrace. Kill is closed when even that took too long: everything
	// left is reset.
	Drain, Kill <-chan struct{}
	// Tunnel says the relay carries a tunnel (after an HTTP upgrade or
	// CONNECT): how far the client read tells nothing of the backend's
	// stream, which may still answer the client's EOF (a closing frame,
	// an exit status), so the back leg takes no bet on it: a grace that
	// runs out sends the FIN, whatever the leg's target (nowhere and auto
	// included) or fallback (the executor sets Back.Fallback to fin).
	Tunnel bool
}

// DrainGrace is the longest a leg still waits for its peer once shutdown
// began ending sessions (Session.Drain): then what is left is cut.
const DrainGrace = time.Second

// Pending is payload already read off one leg, to be sent on before the
// relay reads more: bytes past a PROXY header, or buffered past the last
// HTTP message before a tunnel.
type Pending struct {
	Up   []byte // the client's, for the backend
	Down []byte // the backend's, for the client
}

// Relay carries bytes both ways between front and back, pending ones
// first, until both legs are closed, and closes each as its policy and
// the rules that outrank it say. It returns when both sockets are closed
// and both copiers ended.
func (s *Session) Relay(front, back *net.TCPConn, pending Pending) {
	s.Rec.reopen(policy.Back) // a tunnel on a connection an earlier exchange gave back: its close is this relay's
	x := newExecutor(s)
	f := x.addLeg(policy.Front, front)
	b := x.addLeg(policy.Back, back)
	b.readBase, b.readKnown = readSoFar(back)
	x.addDir(f, b)
	x.addDir(b, f)
	if x.prime(b, pending.Up) && x.prime(f, pending.Down) {
		x.armIdle(time.Now())
	} else {
		x.cutAll(OutcomeError, nil)
	}
	x.run(nil)
}

// Ending says how End finds a leg.
type Ending struct {
	PeerFIN   bool // the caller read the peer's FIN already
	AwaitsEOF bool // the peer waits for EOF to know a message ended (http1: a close-delimited response)
	// MayAwaitEOF: the peer may read to EOF unless it closes first (http1:
	// a framed response after which the connection closes): rule 1's
	// reading, as the kernel's, not a word that holds for every event.
	MayAwaitEOF bool
	Cut         bool // the stream toward the peer was cut short: reset at once
	// Deliver, with Cut: what was sent on the leg reaches the peer first;
	// the reset goes once the peer acknowledged it (drain_timeout at
	// most), recorded as cut. For a stream cut by the other peer's reset.
	Deliver bool
	// Between, for a peer's reset (Why policy.ReasonPeerReset): it came
	// between messages, nothing of a next one in (http1: a client idle
	// between requests). A peer that had acknowledged every byte it was
	// sent cut nothing: the record keeps its outcome (ok), the leg's
	// close peer_reset. A load balancer that drops idle connections with
	// an RST ends them so.
	Between bool
	Why     policy.Reason // with Cut: the reason recorded
}

// End closes one leg that has nothing more to send (http1, between
// exchanges), as its policy says. What its peer still sends can reach no
// one: it is late data, and the leg is reset so that the peer learns it
// was lost; bytes already buffered in in count too.
func (s *Session) End(name policy.Leg, c *net.TCPConn, in *bufio.Reader, e Ending) {
	s.Rec.reopen(name)
	x := newExecutor(s)
	l := x.addLeg(name, c)
	l.takeEnding(e)
	late := in != nil && in.Buffered() > 0
	if late {
		s.Rec.Received(name, int64(in.Buffered())) // received, whatever becomes of them
	}
	switch {
	case e.Cut && e.Deliver:
		x.run(func() { x.cutDelivered(l) })
		return
	case e.Cut:
		x.rst(l, e.Why, true)
		return
	case late:
		// What End is given has nothing more to send: its stream is whole.
		x.run(func() { x.wholeThenLate(l) })
		return
	}
	if !l.inDone {
		x.addDir(l, nil)
	}
	x.run(func() { x.sendDone(l) })
}

// Beside returns a Session that ends one leg (End) on another goroutine
// while s ends the other, as a relay loop ends both at once: its
// Recorder is a copy of s's, from which Join takes that leg back.
func (s *Session) Beside() *Session {
	b := *s
	b.Rec = &Recorder{td: s.Rec.td, start: s.Rec.start}
	return &b
}

// Join takes back what b (Beside) recorded of leg l, once b's End
// returned and s's other leg no longer changes: the leg's record, and b's
// outcome where s's is still ok.
func (s *Session) Join(b *Session, l policy.Leg) {
	*s.Rec.td.Leg(l) = *b.Rec.td.Leg(l)
	s.Rec.Outcome(b.Rec.td.Outcome, b.Rec.td.Err)
}

// Refuse ends an accepted connection with an RST before any byte was
// relayed: the client learns at once and no side keeps TIME-WAIT. A
// client that reset first (while its session waited for a backend
// connection, say) is recorded so: its reset, client_reset, and no RST
// of the proxy's, which its close could not send.
func Refuse(rec *Recorder, c *net.TCPConn, o Outcome, err error) {
	o, err = refusal(o, err, o != OutcomeClientReset && ResetByPeer(c))
	rec.Outcome(o, err)
	_ = c.SetLinger(0)
	_ = c.Close()
	rec.refused(o)
}

// RefuseFD is Refuse for a connection the caller holds as a socket
// descriptor (see Loops.RelayFD).
func RefuseFD(rec *Recorder, fd int, o Outcome, err error) {
	o, err = refusal(o, err, o != OutcomeClientReset && resetByPeerFD(fd))
	rec.Outcome(o, err)
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
	_ = unix.Close(fd)
	rec.refused(o)
}

// refusal is a refusal's outcome and error: the client's reset where it
// came first (reset), the refusal it preempted named in the error.
func refusal(o Outcome, err error, reset bool) (Outcome, error) {
	if !reset {
		return o, err
	}
	if err == nil {
		return OutcomeClientReset, fmt.Errorf("reset by the client before the proxy refused it (%s)", o)
	}
	return OutcomeClientReset, fmt.Errorf("reset by the client before the proxy refused it (%s): %w", o, err)
}

// refused records the front leg's end at its refusal: the proxy's reset,
// or, where the client's reset came first (OutcomeClientReset: a read
// met it), the peer's, to which the proxy's close sent nothing.
func (r *Recorder) refused(o Outcome) {
	if o == OutcomeClientReset {
		r.closed(policy.Front, policy.ClosePeerReset)
		r.Note(policy.Front, policy.ReasonPeerReset)
		return
	}
	r.reset(policy.Front, policy.ReasonRefused, false)
}
