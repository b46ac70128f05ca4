package park

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// events is what a parked socket waits for: anything to read, the peer's
// FIN, an error; one event, then the socket is out of the set.
const events = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// Parker holds parked sockets in one epoll set, watched by one goroutine
// that parks in Go's netpoller on the set's descriptor.
type Parker struct {
	ep   *os.File // the epoll descriptor, non-blocking, in Go's netpoller
	epfd int
	rc   syscall.RawConn
	done chan struct{} // closed when run returned

	// Only run touches these.
	ready []unix.EpollEvent
	n     int
	werr  error

	closeOnce sync.Once

	mu     sync.Mutex
	waits  map[int32]*Wait // parked, by descriptor
	closed bool            // by Close, or by run when epoll failed
}

// Wait is one parked socket, woken once.
type Wait struct {
	p     *Parker
	fd    int
	wake  func()
	timer *time.Timer
}

// New makes a Parker and starts its goroutine; Close ends it.
func New() (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	p := &Parker{ep: os.NewFile(uintptr(epfd), "park-epoll"), epfd: epfd, done: make(chan struct{}),
		ready: make([]unix.EpollEvent, 64), waits: map[int32]*Wait{}}
	if p.rc, err = p.ep.SyscallConn(); err != nil {
		_ = p.ep.Close()
		return nil, fmt.Errorf("park: %w", err)
	}
	go p.run()
	return p, nil
}

// Park watches the socket fd until it has something to read (bytes, a
// FIN, an error), until the time until, or until Wake, whichever comes
// first, and then calls wake once, on a goroutine of its own. The caller
// keeps fd open until wake was called. A wake-up may find nothing to read
// (an event that raced a timer): the caller reads without blocking, or
// parks again.
func (p *Parker) Park(fd int, until time.Time, wake func()) (*Wait, error) {
	w := &Wait{p: p, fd: fd, wake: wake}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil, ErrClosed
	case p.waits[int32(fd)] != nil:
		return nil, fmt.Errorf("park: descriptor %d is parked already", fd)
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	p.waits[int32(fd)] = w
	w.timer = time.AfterFunc(time.Until(until), func() { // its first look needs p.mu: after this returns
		if w.take() {
			w.wake()
		}
	})
	return w, nil
}

// Wake wakes w now, unless it was woken already; it reports whether it did.
func (w *Wait) Wake() bool {
	if !w.take() {
		return false
	}
	go w.wake()
	return true
}

// Parked is how many sockets are parked now.
func (p *Parker) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waits)
}

// take takes w out of the set, for its one wake-up: false if it was taken
// already.
func (w *Wait) take() bool {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waits[int32(w.fd)] != w {
		return false
	}
	delete(p.waits, int32(w.fd))
	if !p.closed { // once closed, epfd's number may be another descriptor's
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, w.fd, nil)
	}
	w.timer.Stop()
	return true
}

// run wakes the parked sockets that epoll reports, until Close. Should
// the epoll descriptor fail, it closes the Parker: every parked socket is
// woken and Park fails from then on, so that sessions wait on their own.
func (p *Parker) run() {
	defer close(p.done)
	defer p.wakeAll()
	for {
		if err := p.rc.Read(p.poll); err != nil || p.werr != nil {
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			return
		}
		for _, ev := range p.ready[:p.n] {
			p.mu.Lock()
			w := p.waits[ev.Fd]
			p.mu.Unlock()
			if w != nil {
				w.Wake()
			}
		}
	}
}

// poll takes what is ready without blocking; false lets RawConn.Read park
// until the epoll descriptor is readable, and call it again.
func (p *Parker) poll(fd uintptr) bool {
	p.n, p.werr = unix.EpollWait(int(fd), p.ready, 0)
	if p.werr == unix.EINTR {
		p.n, p.werr = 0, nil
	}
	return p.n > 0 || p.werr != nil
}

// Close ends the Parker's goroutine and wakes every socket still parked;
// Park fails from then on.
func (p *Parker) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		_ = p.ep.Close()
	})
	<-p.done // run wakes the rest
}

// wakeAll wakes every socket still parked; p is closed.
func (p *Parker) wakeAll() {
	p.mu.Lock()
	left := make([]*Wait, 0, len(p.waits))
	for _, w := range p.waits {
		left = append(left, w)
	}
	p.mu.Unlock()
	for _, w := range left {
		w.Wake()
	}
}
