package evloop

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

const (
	front = 0 // leg to the client; also the direction client → backend
	back  = 1 // leg to the backend; also the direction backend → client
)

// session is one proxied connection as a state machine: its two
// descriptors, what edge-triggered epoll said about them, and the two
// directions. It holds no buffer while nothing waits to be written.
type session struct {
	fd        [2]int32
	rd, wr    [2]bool // readable/writable, learned from edges, cleared by EAGAIN
	closed    [2]bool
	dir       [2]direction // dir[front]: read front, write back
	connected bool
	queued    bool // in loop.again
	ended     bool
	client    netip.AddrPort // from accept4
	local     netip.AddrPort // the back leg's own address, once connected
	drainLeg  int            // the leg a safe reset waits for
	drainEnd  time.Time
}

// direction is one way through the session: src is leg i, dst leg 1-i.
type direction struct {
	buf      []byte // bytes read and not yet written, from the loop's pool
	off, end int
	eof      bool // src's peer sent FIN
	draining bool // a safe reset of dst waits for its send queue
	done     bool // dst got our FIN or RST
}

// open starts a session for an accepted descriptor: a raw non-blocking
// connect to the backend, both descriptors in epoll edge-triggered for
// reading and writing, registered once and never modified.
func (l *loop) open(cfd int, client netip.AddrPort) {
	bfd, connected, err := dial(l.backend)
	if err != nil {
		lingerZero(cfd) // the dial failed: the client learns by an RST
		unix.Close(cfd)
		return
	}
	s := &session{fd: [2]int32{int32(cfd), int32(bfd)}, connected: connected, wr: [2]bool{true, connected}, client: client}
	if connected {
		s.local = localAddr(bfd)
	}
	for _, fd := range s.fd {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLET, Fd: fd}
		if err := unix.EpollCtl(int(l.ep.Fd()), unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			lingerZero(cfd)
			unix.Close(cfd)
			unix.Close(bfd)
			return
		}
	}
	l.sessions[s.fd[front]], l.sessions[s.fd[back]] = s, s
	l.srv.live.Add(1)
}

// event notes what an edge said about fd and moves the session on.
func (l *loop) event(s *session, fd int32, ev uint32) {
	i := front
	if fd == s.fd[back] {
		i = back
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.rd[i] = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.wr[i] = true
	}
	if i == back && !s.connected && s.wr[back] {
		if !l.established(s) {
			return
		}
	}
	l.pump(s)
}

// established completes the connect: SO_ERROR, and the back leg's local
// address (the one getsockname a record of the 4-tuple needs).
func (l *loop) established(s *session) bool {
	fd := int(s.fd[back])
	if err := connectError(fd); err != nil {
		l.abort(s)
		return false
	}
	s.connected, s.local = true, localAddr(fd)
	return true
}

// pump runs both directions as far as the sockets let them, and ends the
// session when both are done.
func (l *loop) pump(s *session) {
	if !s.connected || s.ended {
		return
	}
	more := false
	for _, i := range [2]int{front, back} {
		m, ok := l.flow(s, i)
		if !ok {
			return
		}
		more = more || m
	}
	switch {
	case s.dir[front].done && s.dir[back].done:
		l.finish(s)
	case more && !s.queued:
		s.queued = true
		l.again = append(l.again, s)
	}
}

// flow moves bytes from leg i to leg 1-i: write what is pending, then
// read into the loop's scratch buffer and write straight on; only what
// the destination would not take is copied into a pooled buffer, and
// reading stops until it is written (backpressure). more says the budget
// ran out with the source still readable; ok is false once the session
// was aborted.
func (l *loop) flow(s *session, i int) (more, ok bool) {
	d := &s.dir[i]
	for range flowBudget {
		if pending, ok := l.flush(s, i); !ok || pending {
			return false, ok
		}
		if d.eof {
			if d.done || d.draining {
				return false, true
			}
			return false, l.passEOF(s, i)
		}
		if !s.rd[i] {
			return false, true
		}
		n, err := rawRead(s.fd[i], l.scratch)
		switch {
		case err == unix.EAGAIN:
			s.rd[i] = false
			return false, true
		case err != nil:
			l.abort(s)
			return false, false
		case n == 0:
			d.eof = true
			continue
		}
		if !l.forward(s, i, n) {
			return false, false
		}
	}
	return true, true
}

// flush writes what direction i holds; pending says some is still held
// (the destination is full), and the pooled buffer goes back once empty.
func (l *loop) flush(s *session, i int) (pending, ok bool) {
	d, o := &s.dir[i], 1-i
	for d.end > d.off {
		if !s.wr[o] {
			return true, true
		}
		n, err := rawWrite(s.fd[o], d.buf[d.off:d.end])
		if err == unix.EAGAIN {
			s.wr[o] = false
			return true, true
		} else if err != nil {
			l.abort(s)
			return false, false
		}
		if d.off += n; d.off == d.end {
			l.putBuf(d.buf)
			d.buf, d.off, d.end = nil, 0, 0
		}
	}
	return false, true
}

// forward writes the n bytes just read from leg i on to leg 1-i and keeps
// what it would not take.
func (l *loop) forward(s *session, i, n int) bool {
	d, o, w := &s.dir[i], 1-i, 0
	if s.wr[o] {
		var err error
		w, err = rawWrite(s.fd[o], l.scratch[:n])
		switch {
		case err == unix.EAGAIN:
			s.wr[o], w = false, 0
		case err != nil:
			l.abort(s)
			return false
		}
	}
	if w < n {
		d.buf = l.getBuf()
		d.off, d.end = 0, copy(d.buf, l.scratch[w:n])
	}
	return true
}

// passEOF ends leg 1-i for writing now that leg i's peer sent FIN and
// everything it sent is written: shutdown(SHUT_WR), so the open direction
// keeps flowing. With SafeReset, when leg 1-i's own peer already sent its
// FIN, that leg ends with a safe reset instead of the second FIN.
func (l *loop) passEOF(s *session, i int) bool {
	d, o := &s.dir[i], 1-i
	if l.cfg.SafeReset && s.dir[o].eof {
		if !l.tryReset(s, o) {
			d.draining, s.drainLeg, s.drainEnd = true, o, time.Now().Add(l.cfg.drainTimeout())
			l.draining = append(l.draining, s)
		}
		return true
	}
	if err := rawShutdownWrite(s.fd[o]); err != nil {
		l.abort(s)
		return false
	}
	d.done = true
	return true
}

// tryReset resets leg o if every byte sent on it is acknowledged.
func (l *loop) tryReset(s *session, o int) bool {
	if q, err := unacked(int(s.fd[o])); err != nil || q > 0 {
		return false
	}
	lingerZero(int(s.fd[o]))
	l.closeLeg(s, o)
	s.dir[1-o].done = true
	return true
}

// drained is a draining session's timer: reset once SIOCOUTQ reads 0,
// else a FIN when DrainTimeout ran out. It reports that the wait is over.
func (l *loop) drained(s *session, now time.Time) bool {
	o := s.drainLeg
	switch {
	case l.tryReset(s, o):
	case now.After(s.drainEnd):
		if err := rawShutdownWrite(s.fd[o]); err != nil {
			l.abort(s)
			return true
		}
		s.dir[1-o].done = true
	default:
		return false
	}
	s.dir[1-o].draining = false
	l.pump(s)
	return true
}

// finish ends a session whose directions are both done: each FIN (or
// RST) is sent, so close releases what is left and sends nothing more.
func (l *loop) finish(s *session) {
	for i := range s.fd {
		l.closeLeg(s, i)
	}
	l.end(s)
}

// abort cuts the session: an RST on every leg still open, so that no
// peer mistakes a cut for a clean end.
func (l *loop) abort(s *session) {
	for i := range s.fd {
		if !s.closed[i] {
			lingerZero(int(s.fd[i]))
		}
		l.closeLeg(s, i)
	}
	l.end(s)
}

func (l *loop) closeLeg(s *session, i int) {
	if s.closed[i] {
		return
	}
	s.closed[i] = true
	delete(l.sessions, s.fd[i])
	l.closing = append(l.closing, int(s.fd[i]))
}

func (l *loop) end(s *session) {
	s.ended = true
	for i := range s.dir {
		l.putBuf(s.dir[i].buf)
		s.dir[i].buf = nil
	}
	l.srv.live.Add(-1)
}
