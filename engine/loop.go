package engine

import (
	"context"
	"errors"
	"net"
)

// Loops run relays on event loops instead of goroutines: each loop is one
// goroutine over an epoll set, and a session handed to it is a struct that
// the loop's events move on — no goroutine, no stack, while it lives. The
// close is the same executor as Relay's (the same decisions, kernel reads
// and record); only who waits differs: the loop reads and writes the
// non-blocking sockets as epoll reports them ready, and a per-loop timer
// heap holds every session's next look.
//
// Loops apply their own drain and kill channels (NewLoops) to every
// session handed to them; Session.Drain and Session.Kill are not read.
type Loops struct {
	impl *loops
}

// ErrLoopsClosed is Relay's error once Close began: the caller relays the
// session itself.
var ErrLoopsClosed = errors.New("relay loops closed")

// NewLoops starts n event loops (n ≤ 0: one). drain and kill mean what
// Session.Drain and Session.Kill mean, for every session the loops run.
func NewLoops(n int, drain, kill <-chan struct{}) (*Loops, error) {
	l, err := newLoops(max(n, 1), drain, kill)
	if err != nil {
		return nil, err
	}
	return &Loops{impl: l}, nil
}

// Relay hands s, front and back to a loop, which relays them as
// Session.Relay does and calls done on its goroutine once both sockets are
// closed (s.Rec is then complete). The loop owns the connections from
// then on (a *net.TCPConn is closed here, its socket kept by the loop).
// An error means nothing was handed over and the connections are
// untouched: the caller relays them itself.
func (ls *Loops) Relay(s *Session, front, back Socket, p Pending, done func()) error {
	return ls.impl.relay(-1, s, front, back, p, done)
}

// Place returns the loop on which a session accepted on loop on (as
// Listen's accept is told) should run: on itself, unless it holds
// several sessions more than the loop that holds fewest, then that one.
// The first loop to run after a listening socket's event accepts every
// connection waiting (up to its budget), so a crowd of keep-alive
// clients would otherwise all land on one loop, whose one goroutine
// then serves them while the other loops idle.
func (ls *Loops) Place(on int) int { return ls.impl.place(on) }

// RelayOn is Relay on loop on (as Listen's accept is told) when no loop
// watches either leg yet; on -1 is Relay.
func (ls *Loops) RelayOn(on int, s *Session, front, back Socket, p Pending, done func()) error {
	return ls.impl.relay(on, s, front, back, p, done)
}

// Connect waits, bounded by ctx, until the connection that fd (a
// non-blocking socket) started with connect(2) is established, and
// returns the loop that now watches fd: a Relay of it (Socket.Home)
// runs there, and costs no registration. A connection already
// established when Connect is called (the kernel runs the handshake
// inside connect to a peer on this host) is watched by none: home is -1
// and the loop that relays it registers it. A ctx already done asks for
// nothing but that: any other connect gets ctx's error at once, no loop
// told. A loop watching an idle connection ignores it; close fd when it
// is not relayed. An error is the connection's (connect's SO_ERROR),
// ctx's, or ErrLoopsClosed.
func (ls *Loops) Connect(ctx context.Context, fd int) (home int, err error) {
	return ls.impl.connect(ctx, fd)
}

// Forget stops home's loop watching fd (Connect): before fd's socket goes
// on without the loops under another descriptor (a duplicate), which the
// loop would otherwise still be told of.
func (ls *Loops) Forget(home, fd int) { ls.impl.forget(home, fd) }

// A Socket is one leg as Relay takes it: a *net.TCPConn (TCP), whose
// descriptor the loop duplicates, or a bare descriptor (Bare) that the
// loop takes as it is, watched already by loop Home when Home ≥ 0.
type Socket struct {
	Conn *net.TCPConn
	FD   int
	Home int
}

// TCP is c as a Socket.
func TCP(c *net.TCPConn) Socket { return Socket{Conn: c, FD: -1, Home: -1} }

// Bare is the non-blocking, close-on-exec socket fd as a Socket; home is
// the loop that Connect returned for it, or -1.
func Bare(fd, home int) Socket { return Socket{FD: fd, Home: home} }

// Begin tells every task (Start) that draining began.
func (ls *Loops) Begin() { ls.impl.begin() }

// Close waits until every session handed over has called done, then stops
// the loops. Call it after the sessions ended (kill cuts what is left);
// calling it again does nothing.
func (ls *Loops) Close() { ls.impl.close() }
