package engine

import (
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
// then on: front and back are closed here, their sockets kept by the loop.
// An error means nothing was handed over and the connections are
// untouched: the caller relays them itself.
func (ls *Loops) Relay(s *Session, front, back *net.TCPConn, p Pending, done func()) error {
	return ls.impl.relay(s, front, back, p, done)
}

// RelayFD is Relay with the front connection as a socket descriptor
// (non-blocking, close-on-exec) that the caller accepted itself: the loop
// takes it as it is, without the duplicate and close a *net.TCPConn
// costs. An error means nothing was handed over: front is still the
// caller's, and back untouched.
func (ls *Loops) RelayFD(s *Session, front int, back *net.TCPConn, p Pending, done func()) error {
	return ls.impl.relayFD(s, front, back, p, done)
}

// Close waits until every session handed over has called done, then stops
// the loops. Call it after the sessions ended (kill cuts what is left);
// calling it again does nothing.
func (ls *Loops) Close() { ls.impl.close() }
