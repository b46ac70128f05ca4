package evloop

import (
	"errors"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	maxEvents   = 256      // epoll events taken per wait
	acceptBatch = 64       // accepts per listener event (level-triggered)
	bufSize     = 16 << 10 // scratch and pending buffers
	maxFreeBufs = 64       // pending buffers kept for reuse per loop
	flowBudget  = 16       // reads per direction per turn, then others go
	drainTick   = time.Millisecond
)

// loop is one event loop: an epoll set that Go's netpoller watches, one
// listener, and the sessions it accepted. Only its goroutine touches it,
// after Start.
type loop struct {
	srv      *Server
	cfg      Config
	backend  *unix.SockaddrInet4
	ep       *os.File // the epoll descriptor, non-blocking, in Go's netpoller
	rc       syscall.RawConn
	lfd      int
	events   []unix.EpollEvent
	sessions map[int32]*session // by either of its descriptors
	scratch  []byte             // every read lands here first
	free     [][]byte           // pending buffers to reuse
	again    []*session         // sessions that used their budget with work left
	draining []*session         // waiting for SIOCOUTQ to read 0
	closing  []int              // descriptors to close once this batch is done
	deadline bool               // a read deadline is set on ep
	poll     func(uintptr) bool // l.pollOnce, made once: a closure per wait would allocate
	n        int                // pollOnce's results
	werr     error
	park     bool     // pollOnce may let the goroutine park when nothing is ready
	h1       *h1state // http1 mode (Config.HTTP1); nil in tcp mode
}

func newLoop(s *Server, cfg Config, be *unix.SockaddrInet4, addr netip.AddrPort) (*loop, error) {
	lfd, err := listen(addr)
	if err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(lfd)
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(lfd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	own := *be // Connect writes into its sockaddr: one per loop
	l := &loop{srv: s, cfg: cfg, backend: &own, lfd: lfd, ep: os.NewFile(uintptr(epfd), "epoll"),
		events: make([]unix.EpollEvent, maxEvents), sessions: map[int32]*session{}, scratch: make([]byte, bufSize)}
	l.poll = l.pollOnce
	if cfg.HTTP1 {
		l.h1 = newH1State()
	}
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.release()
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		l.release()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return l, nil
}

// run waits for events and handles them until ep is closed.
func (l *loop) run() {
	defer l.release()
	for {
		n, err := l.wait()
		if err != nil {
			return
		}
		for _, ev := range l.events[:n] {
			l.dispatch(ev)
		}
		l.runAgain()
		if len(l.draining) > 0 {
			l.runDrains(time.Now())
		}
		l.flushCloses()
	}
}

// wait returns the ready events. The goroutine parks in Go's netpoller on
// the epoll descriptor itself — one park and wake per batch, not per
// socket — and never blocks a thread in epoll_wait, which on one P would
// stall everything else until sysmon noticed. It does not park when
// sessions have work left, and parks at most drainTick while a safe reset
// waits for its send queue.
func (l *loop) wait() (int, error) {
	if len(l.draining) > 0 {
		l.ep.SetReadDeadline(time.Now().Add(drainTick))
		l.deadline = true
	} else if l.deadline {
		l.ep.SetReadDeadline(time.Time{})
		l.deadline = false
	}
	l.park, l.n, l.werr = len(l.again) == 0, 0, nil
	err := l.rc.Read(l.poll)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, err
	case l.werr != nil:
		return 0, os.NewSyscallError("epoll_wait", l.werr)
	}
	return l.n, nil
}

// pollOnce takes what is ready without blocking; false lets RawConn.Read
// park until the epoll descriptor is readable, and call it again.
func (l *loop) pollOnce(fd uintptr) bool {
	l.n, l.werr = rawEpollPoll(int(fd), l.events)
	if l.werr == unix.EINTR {
		l.n, l.werr = 0, nil
	}
	return l.n > 0 || l.werr != nil || !l.park
}

func (l *loop) dispatch(ev unix.EpollEvent) {
	if int(ev.Fd) == l.lfd {
		l.accept()
		return
	}
	if l.h1 != nil {
		l.dispatchHTTP1(ev.Fd, ev.Events)
	} else if s := l.sessions[ev.Fd]; s != nil {
		l.event(s, ev.Fd, ev.Events)
	}
}

// accept takes up to acceptBatch connections; the listener is
// level-triggered, so what is left is reported again.
func (l *loop) accept() {
	for range acceptBatch {
		cfd, client, err := accept(l.lfd)
		switch err {
		case nil:
			if l.h1 != nil {
				l.openHTTP1(cfd)
			} else {
				l.open(cfd, client)
			}
		case unix.EINTR, unix.ECONNABORTED:
		default: // EAGAIN: none left; EMFILE and others: try again on the next event
			return
		}
	}
}

// runAgain gives the sessions that used their budget another turn.
func (l *loop) runAgain() {
	again := l.again
	l.again = l.again[len(l.again):]
	for _, s := range again {
		s.queued = false
		if !s.ended {
			l.pump(s)
		}
	}
	if len(l.again) == 0 {
		l.again = again[:0]
	}
}

// runDrains is the loop's only timer: a safe reset waiting for SIOCOUTQ
// to read 0, at most DrainTimeout, then a FIN.
func (l *loop) runDrains(now time.Time) {
	keep := l.draining[:0]
	for _, s := range l.draining {
		if !s.ended && !l.drained(s, now) {
			keep = append(keep, s)
		}
	}
	clear(l.draining[len(keep):])
	l.draining = keep
}

// flushCloses closes the descriptors of this batch's ended legs. Closing
// after the batch keeps a number from being reused by an accept while
// stale events for it are still being handled.
func (l *loop) flushCloses() {
	for _, fd := range l.closing {
		rawClose(fd)
	}
	l.closing = l.closing[:0]
}

func (l *loop) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b
	}
	return make([]byte, bufSize)
}

func (l *loop) putBuf(b []byte) {
	if len(b) == bufSize && len(l.free) < maxFreeBufs {
		l.free = append(l.free, b)
	}
}

// release closes the listener, cuts every open session with an RST and
// closes the epoll descriptor; the loop is done.
func (l *loop) release() {
	unix.Close(l.lfd)
	for _, s := range l.sessions {
		if !s.ended {
			l.abort(s)
		}
	}
	if l.h1 != nil {
		l.releaseHTTP1()
	}
	l.flushCloses()
	l.ep.Close()
}
