package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/policy"
)

// A Task is a session that a loop drives as a state machine of its own
// rather than as a relay (http1's exchanges). The loop calls its methods
// on its goroutine, one at a time; a Task touches its sockets only there.
type Task interface {
	// Start is called once, first, with the Runner the task acts through
	// and its first socket.
	Start(rn *Runner, first *TaskSock)
	// Ready says an edge arrived on s: what it made known is in s; nil
	// after Runner.Again.
	Ready(s *TaskSock)
	// Due says the time set with Runner.Schedule came.
	Due(now time.Time)
	// Begun says draining began: what is idle ends, what runs finishes.
	Begun()
	// Drain says shutdown_timeout ran out: what still runs is cut.
	Drain(now time.Time)
	// Crashed says a call to the task panicked with p; the loop reset
	// its sockets and forgot it.
	Crashed(p any)
}

// Runner is a task's hold on its loop.
type Runner struct {
	l *loop
	r *loopRelay
}

// TaskSock is a non-blocking socket of a task, as edge-triggered epoll
// told of it.
type TaskSock struct{ s *fdSock }

// SyscallConn gives the descriptor to Control while it is open.
func (t *TaskSock) SyscallConn() (syscall.RawConn, error) { return t.s, nil }

// taskSock is s as its task sees it, made once.
func (s *fdSock) taskSock() *TaskSock {
	if s.ts == nil {
		s.ts = &TaskSock{s}
	}
	return s.ts
}

// FD is the socket's descriptor.
func (t *TaskSock) FD() int { return t.s.fd }

// Readable says a read may return bytes (or EOF, or an error).
func (t *TaskSock) Readable() bool { return t.s.rd }

// ShutAt is when an edge first said the peer's FIN (or an error) was in,
// as the loop woke to it; zero while none did. A task that reads the FIN
// later, behind bytes it took first, knows when it came.
func (t *TaskSock) ShutAt() time.Time { return t.s.shutAt }

// Writable says a write may take bytes.
func (t *TaskSock) Writable() bool { return t.s.wr }

// Read reads into p: 0 and nil at EOF; ErrWouldBlock when nothing is
// there. Readable then says false until the next edge, as it does after
// a read shorter than p: that emptied the socket's queue, and what comes
// next raises an edge (unless the peer's FIN is in: then on to EOF).
func (t *TaskSock) Read(p []byte) (int, error) {
	n, err := ignoringEINTR(func() (int, error) { return rawRecv(t.s.fd, p) })
	switch {
	case err == unix.EAGAIN:
		t.s.rd = false
		return 0, ErrWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n > 0 && n < len(p) && !t.s.shut:
		t.s.rd = false
	}
	t.s.got += uint64(n)
	return n, nil
}

// Write writes what it can of p; ErrWouldBlock when the socket takes
// nothing now (Writable then says false until the next edge).
func (t *TaskSock) Write(p []byte) (int, error) { return t.write(p, false) }

// WriteLast is Write for the last bytes before the task ends the leg
// (Runner.End): if few, the kernel holds them for the FIN that ending
// sends, one segment for both; if no FIN follows in this turn (the policy
// withholds it, or the task goes on), the loop sends them as the turn
// ends (fdSock.send).
func (t *TaskSock) WriteLast(p []byte) (int, error) { return t.write(p, true) }

func (t *TaskSock) write(p []byte, last bool) (int, error) {
	n, err := t.s.send(p, last)
	switch {
	case err == unix.EAGAIN:
		t.s.wr = false
		return 0, ErrWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("write", err)
	}
	return n, nil
}

// ErrWouldBlock: the socket is not ready; an edge will say when it is.
var ErrWouldBlock = errors.New("would block")

// Start hands t to the next loop. fd, a bare non-blocking socket no loop
// watches, is the task's first socket: its first edge comes to t.Ready.
// An error means nothing was handed over.
func (ls *Loops) Start(t Task, fd int) error { return ls.impl.startTask(-1, t, fd) }

// StartOn is Start on loop on (as Listen's accept is told), or on the
// next loop when on is -1.
func (ls *Loops) StartOn(on int, t Task, fd int) error { return ls.impl.startTask(on, t, fd) }

func (ls *loops) startTask(on int, t Task, fd int) error {
	if err := ls.enter(); err != nil {
		return err
	}
	l := ls.ls[ls.pick(on)]
	r := newLoopRelay(l, nil)
	r.task = t
	r.sockArr[0] = &fdSock{fd: fd, r: r}
	r.socks = r.sockArr[:1]
	l.hold(r)
	l.post(message{add: r})
	return nil
}

// startTask registers a task's first socket and starts it.
func (l *loop) startTask(r *loopRelay) {
	l.relays[r] = struct{}{}
	r.runner = &Runner{l: l, r: r}
	s := r.socks[0]
	if err := l.watch(s); err != nil {
		_ = rawLingerZero(s.fd)
		l.closing = append(l.closing, s.fd)
		s.closed = true
		r.socks = nil
		l.handleTask(r, func() { r.task.Crashed(err) })
		return
	}
	l.handleTask(r, func() {
		r.task.Start(r.runner, s.taskSock())
		if l.begun {
			r.task.Begun()
		}
		if l.draining {
			r.task.Drain(time.Now())
		}
	})
}

// watch adds s to the loop's epoll set (or modifies it there, for a
// socket this loop watches already), which reports its state afresh.
func (l *loop) watch(s *fdSock) error {
	op := unix.EPOLL_CTL_ADD
	if s.watched {
		op = unix.EPOLL_CTL_MOD
	}
	ev := unix.EpollEvent{Events: relayEvents, Fd: int32(s.fd)}
	if err := rawEpollCtl(l.epfd, op, s.fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	s.watched, s.live = true, true
	l.socks.put(s)
	l.setQuiet(s.fd, false)
	return nil
}

// handleTask runs f, a call to r's task, then forgets the task once it
// is done. A panic resets the task's sockets and tells it (Crashed).
func (l *loop) handleTask(r *loopRelay, f func()) {
	if r.ended {
		return
	}
	defer l.afterTask(r)
	f()
}

// taskReady hands an edge of s to its task, as handleTask does, without
// a closure for every edge.
func (l *loop) taskReady(s *fdSock) {
	r := s.r
	if r.ended {
		return
	}
	defer l.afterTask(r)
	r.task.Ready(s.taskSock())
}

// afterTask, deferred around each call to r's task: a panic resets the
// task's sockets and tells it (Crashed); a task done is forgotten.
func (l *loop) afterTask(r *loopRelay) {
	if p := recover(); p != nil {
		for _, s := range r.socks {
			if !s.closed {
				_ = s.SetLinger(0)
				_ = s.Close()
			}
		}
		r.socks = nil
		r.taskDone = true
		func() {
			defer func() { _ = recover() }()
			r.task.Crashed(p)
		}()
	}
	if r.taskDone && !r.ended {
		l.schedule(r, time.Time{})
		l.unhold(r)
		r.ended = true
		delete(l.relays, r)
		l.ls.live.Done()
	}
}

// Watch adds a socket to the task: a bare non-blocking descriptor that
// loop home watches already, or none (-1). One another loop watches is
// taken from it first. One this loop watches is an idle connection it
// left in its set (Leave) or connected (Loops.Connect), whose edges were
// ignored since: the caller checked it just now (a pool's MSG_PEEK) and
// found nothing to read, so it needs no epoll_ctl, what comes next
// raises an edge, and it can take bytes.
func (rn *Runner) Watch(fd, home int) (*TaskSock, error) {
	l := rn.l
	s := &fdSock{fd: fd, r: rn.r}
	if home == l.id {
		s.watched, s.live, s.wr = true, true, true
		l.socks.put(s)
		l.setQuiet(fd, false) // taken back (l.watch clears it otherwise)
	} else {
		if home >= 0 {
			l.ls.forget(home, fd)
		}
		if err := l.watch(s); err != nil {
			return nil, err
		}
	}
	rn.r.socks = append(rn.r.socks, s)
	return s.taskSock(), nil
}

// Unwatch takes s out of the task and the loop's epoll set: the
// descriptor is the caller's again, open.
func (rn *Runner) Unwatch(t *TaskSock) error {
	s := t.s
	rn.drop(s)
	if err := rawEpollCtl(rn.l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// Leave takes s out of the task but leaves it in the loop's epoll set,
// its edges ignored: an idle connection that Watch with this loop as its
// home takes back for nothing (another loop, or Loops.Forget, takes it
// out of the set first). The descriptor is the caller's again, open.
// Quiet then tells whether it is still as Leave left it: nothing to
// read, and no edge since.
func (rn *Runner) Leave(t *TaskSock) {
	s := t.s
	rn.drop(s)
	rn.l.setQuiet(s.fd, !s.rd && !s.shut && !s.closed)
}

// Quiet reports that fd is a connection this loop left idle (Leave) with
// nothing to read, for which no edge came since: as far as the loop's
// latest wait knows, its peer sent nothing, not even a FIN. An edge that
// came after that wait is not known yet; once taken back (Watch), the
// socket gets it. Only Leave marks a descriptor; the loop's adding it to
// its set (a connect it watches, a watch) clears the mark, so a mark is
// always of the socket the loop left, never of an earlier one under the
// same number.
func (rn *Runner) Quiet(fd int) bool {
	q := rn.l.quiet
	return fd >= 0 && fd < len(q) && q[fd]
}

// drop takes s out of the task's sockets and the loop's map.
func (rn *Runner) drop(s *fdSock) {
	for i, o := range rn.r.socks {
		if o == s {
			rn.r.socks = append(rn.r.socks[:i], rn.r.socks[i+1:]...)
			break
		}
	}
	rn.l.socks.del(s)
}

// Close closes s at once with an RST (SO_LINGER 0) or, with reset
// false, a FIN: for a socket nobody's stream depends on.
func (rn *Runner) Close(t *TaskSock, reset bool) {
	s := t.s
	rn.drop(s)
	if reset {
		_ = rawLingerZero(s.fd)
	}
	s.closed = true
	rn.l.closing = append(rn.l.closing, s.fd)
}

// Now is the loop's clock for this turn: read as the turn began, or
// after its park, not at each call. Good for marks and deadlines, not
// for durations measured within the turn.
func (rn *Runner) Now() time.Time { return rn.l.now }

// Schedule sets the task's one timer (zero: none).
func (rn *Runner) Schedule(at time.Time) { rn.l.schedule(rn.r, at) }

// End ends t's leg as Session.End does, on this loop: t leaves the task
// (late: bytes of its peer read already, late data). done is called on
// the loop once its socket is closed.
func (rn *Runner) End(s *Session, name policy.Leg, t *TaskSock, e Ending, late int, done func()) {
	l := rn.l
	sk := t.s
	rn.drop(sk)
	l.ls.live.Add(1)
	r := newLoopRelay(l, done)
	sk.r = r
	r.sockArr[0] = sk
	r.socks = r.sockArr[:1]
	r.setLone(s, name, e, late)
	l.start(r)
}

// Relay relays front and back both ways, on this loop, as Loops.Relay
// does (the same executor, decisions and record): both leave the task,
// p's bytes go first (copied here), and done is called on the loop once
// both sockets are closed. For a session that becomes a tunnel.
func (rn *Runner) Relay(s *Session, front, back *TaskSock, p Pending, done func()) {
	l := rn.l
	rn.drop(front.s)
	rn.drop(back.s)
	l.ls.live.Add(1)
	r := newLoopRelay(l, done)
	for i, t := range [2]*TaskSock{front, back} {
		t.s.r = r
		r.sockArr[i] = t.s
	}
	r.socks = r.sockArr[:2]
	r.setPair(s, p)
	l.start(r)
}

// Again has the loop call Ready(nil) after the other sessions had their
// turn: for a task that used its share of this one with work left.
func (rn *Runner) Again() {
	if r := rn.r; !r.queued {
		r.queued = true
		rn.l.again = append(rn.l.again, r)
	}
}

// Done says the task has nothing left on the loop: its sockets were
// closed, unwatched or ended (End).
func (rn *Runner) Done() { rn.r.taskDone = true }

// Loop is the loop's index (a Socket's Home).
func (rn *Runner) Loop() int { return rn.l.id }

// Local is a slot of the loop's for its tasks' own use, such as what
// ended tasks leave for the next (buffers, parsed heads): only the loop's
// goroutine runs a task's Start, Ready and Due and the dones the loop
// calls, so what the slot holds needs no lock and no sync.Pool.
func (rn *Runner) Local() *any { return &rn.l.local }

// TaskPipe moves a body from one task socket to another through a kernel
// pipe (splice), never through user space: for a large body of known
// length, or one that ends at its sender's FIN. The zero value has no
// pipe yet; Close it when done.
type TaskPipe struct {
	p      splicePipe
	in     int // bytes in the pipe, not yet written on
	ok     bool
	failed bool // the pipe could not be made: Usable says so
}

// Held is what the pipe holds, read and not yet written on.
func (t *TaskPipe) Held() int { return t.in }

// Open reports that the pipe is made (Move made it; Close closes it).
func (t *TaskPipe) Open() bool { return t.ok }

// Usable reports that Move may be called: the pipe is made, or no
// attempt to make it failed yet. Once one did (ErrNoPipe), the caller
// copies through its own buffer, as a tcp relay's direction does.
func (t *TaskPipe) Usable() bool { return t.ok || !t.failed }

// ErrNoPipe: TaskPipe.Move could not make its pipe (the process out of
// descriptors, or its user out of pipe buffers) and moved nothing: a
// failure of this process, neither socket's. The caller goes on through
// its own buffer.
var ErrNoPipe = errors.New("no splice pipe")

// Move writes on to dst what the pipe holds, then takes at most max more
// bytes from src (one splice) and writes them on; n is what reached dst.
// io.EOF: src's peer ended (nothing held). ErrWouldBlock: a socket is
// not ready, and an edge will say when. ErrNoPipe: the pipe could not be
// made, nothing moved (Usable is false from then on). Another error is
// dst's when toDst, else src's.
func (t *TaskPipe) Move(src, dst *TaskSock, max int) (n int, toDst bool, err error) {
	took := false
	if !t.ok {
		if t.failed {
			return 0, false, ErrNoPipe
		}
		t.p = noPipe()
		if err := t.p.open(); err != nil {
			t.failed = true
			return 0, false, fmt.Errorf("%w: %w", ErrNoPipe, err)
		}
		t.ok = true
	}
	for {
		for t.in > 0 {
			if !dst.s.wr {
				return n, true, ErrWouldBlock
			}
			k, err := ignoringEINTR(func() (int, error) { return rawSplice(t.p.r, dst.s.fd, t.in) })
			switch {
			case err == unix.EAGAIN:
				dst.s.wr = false
				return n, true, ErrWouldBlock
			case err != nil:
				return n, true, os.NewSyscallError("splice", err)
			}
			t.in -= k
			n += k
		}
		if max <= 0 || took {
			return n, false, nil
		}
		if !src.s.rd {
			return n, false, ErrWouldBlock
		}
		k, err := ignoringEINTR(func() (int, error) { return rawSplice(src.s.fd, t.p.w, min(max, spliceMax)) })
		switch {
		case err == unix.EAGAIN:
			src.s.rd = false
			return n, false, ErrWouldBlock
		case err != nil:
			return n, false, os.NewSyscallError("splice", err)
		case k == 0:
			return n, false, io.EOF
		}
		t.in += k
		src.s.got += uint64(k)
		max -= k
		took = true
	}
}

// Close closes the pipe; what it held is lost.
func (t *TaskPipe) Close() {
	if t.ok {
		t.p.close()
		t.ok, t.in = false, 0
	}
}
