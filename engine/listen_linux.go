package engine

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Listen has every loop watch fd, a non-blocking listening socket, and
// call accept on its own goroutine when connections wait: accept takes
// them (accept4) and starts their sessions there: RelayOn and StartOn
// with the loop it was told run a session on that loop, with no wake-up
// of another goroutine and no eventfd write. A connection wakes every
// parked loop, and those that run after the first find the queue empty
// (one accept4 each, EAGAIN): a loop's epoll descriptor is itself
// watched by Go's netpoller, and the kernel honours EPOLLEXCLUSIVE only
// toward a thread blocked in epoll_wait on the descriptor, which no loop
// is. accept returns a pause > 0 when the host is out of descriptors or
// memory: that loop stops watching fd for the pause.
//
// stop ends it: once it returns, no loop calls accept again or watches
// fd, which the caller may then close. An error means no loop watches fd.
func (ls *Loops) Listen(fd int, accept func(loop int) (pause time.Duration)) (stop func(), err error) {
	return ls.impl.listen(fd, accept)
}

// listening is one Listen's socket as one loop keeps it.
type listening struct {
	fd     int
	accept func(loop int) time.Duration
	paused bool
}

// listenMsg asks a loop to watch a listening socket (on), forget it
// (off), or watch it again after a pause (resume); ack has the answer
// of on and off.
type listenMsg struct {
	ln     *listening
	on     bool
	resume bool
	ack    chan error
}

func (ls *loops) listen(fd int, accept func(int) time.Duration) (func(), error) {
	if err := ls.enter(); err != nil {
		return nil, err
	}
	defer ls.live.Done()
	lns := make([]*listening, len(ls.ls))
	stop := func(upTo int) {
		for i, l := range ls.ls[:upTo] {
			l.ask(&listenMsg{ln: lns[i]})
		}
	}
	for i, l := range ls.ls {
		lns[i] = &listening{fd: fd, accept: accept}
		if err := l.ask(&listenMsg{ln: lns[i], on: true}); err != nil {
			stop(i)
			return nil, err
		}
	}
	return func() { stop(len(ls.ls)) }, nil
}

// ask posts m and waits for the loop's answer; a loop that stopped
// watches nothing and answers nil.
func (l *loop) ask(m *listenMsg) error {
	m.ack = make(chan error, 1)
	l.post(message{listen: m})
	select {
	case err := <-m.ack:
		return err
	case <-l.exited:
		return nil
	}
}

// listenMessage handles a listenMsg on the loop.
func (l *loop) listenMessage(m *listenMsg) {
	fd := int32(m.ln.fd)
	switch {
	case m.resume:
		if l.listens[fd] == m.ln && m.ln.paused {
			if l.watchListener(m.ln) == nil {
				m.ln.paused = false
			}
		}
	case m.on:
		err := l.watchListener(m.ln)
		if err == nil {
			l.listens[fd] = m.ln
		}
		m.ack <- err
	default:
		if l.listens[fd] == m.ln {
			delete(l.listens, fd)
			if !m.ln.paused {
				_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, m.ln.fd, nil)
			}
		}
		m.ack <- nil
	}
}

// watchListener adds a listening socket to the loop's set,
// level-triggered: what accept leaves comes again. Not EPOLLEXCLUSIVE,
// which would change nothing here (Listen).
func (l *loop) watchListener(ln *listening) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln.fd)}
	if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// acceptOn runs a listener's accept; a pause takes it out of the set
// until a timer posts it back.
func (l *loop) acceptOn(ln *listening) {
	pause := ln.accept(l.id)
	if pause <= 0 || l.listens[int32(ln.fd)] != ln {
		return
	}
	_ = rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
	ln.paused = true
	time.AfterFunc(pause, func() { l.post(message{listen: &listenMsg{ln: ln, resume: true}}) })
}
