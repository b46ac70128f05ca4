package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/policy"
)

// relayEvents is what a loop watches on every socket, edge-triggered.
const relayEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// connectResult is the outcome of fd's connect(2), once epoll reported it.
func connectResult(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	case v != 0:
		return os.NewSyscallError("connect", syscall.Errno(v))
	}
	return nil
}

const (
	loopEvents = 256 // epoll events taken per wait
	flowBudget = 16  // reads per direction per turn, then other sessions go
	maxFree    = 64  // pending buffers a loop keeps for reuse
)

// loops is Loops on Linux: n loops, each one goroutine over its own epoll
// set, and a watcher that tells them of drain and kill.
type loops struct {
	ls   []*loop
	next atomic.Uint32

	mu       sync.Mutex
	closed   bool
	live     sync.WaitGroup // sessions handed over whose done was not called yet
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // the loops' goroutines and the watcher
}

func newLoops(n int, drain, kill <-chan struct{}) (*loops, error) {
	ls := &loops{stop: make(chan struct{})}
	for range n {
		l, err := newLoop(ls)
		if err != nil {
			for _, o := range ls.ls {
				o.release()
			}
			return nil, err
		}
		ls.ls = append(ls.ls, l)
	}
	for _, l := range ls.ls {
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			l.run()
		}()
	}
	ls.wg.Add(1)
	go func() {
		defer ls.wg.Done()
		ls.watch(drain, kill)
	}()
	return ls, nil
}

// watch tells every loop when drain, then kill, is closed.
func (ls *loops) watch(drain, kill <-chan struct{}) {
	for _, c := range []struct {
		ch <-chan struct{}
		m  message
	}{{drain, message{drain: true}}, {kill, message{kill: true}}} {
		select {
		case <-c.ch:
			for _, l := range ls.ls {
				l.post(c.m)
			}
		case <-ls.stop:
			return
		}
	}
}

func (ls *loops) relay(on int, s *Session, front, back Socket, p Pending, done func()) error {
	home := back.Home
	if home < 0 {
		home = front.Home
	}
	if front.Home >= 0 && back.Home >= 0 && front.Home != back.Home || home >= len(ls.ls) {
		return fmt.Errorf("relay: no loop watches both legs (front on %d, back on %d)", front.Home, back.Home)
	}
	if err := ls.enter(); err != nil {
		return err
	}
	if home < 0 {
		home = ls.pick(on)
	}
	l := ls.ls[home]
	r := newLoopRelay(l, done)
	if err := r.take(front, back); err != nil {
		ls.live.Done()
		return err
	}
	r.setPair(s, p)
	l.hold(r)
	l.post(message{add: r})
	return nil
}

// place returns the loop for a session accepted on loop on: on, unless
// it holds more than placeSlack sessions over the loop that holds fewest,
// then that one (the first such).
func (ls *loops) place(on int) int {
	least, fewest := 0, ls.ls[0].held.Load()
	for i, l := range ls.ls {
		if h := l.held.Load(); h < fewest {
			least, fewest = i, h
		}
	}
	if on >= 0 && on < len(ls.ls) && ls.ls[on].held.Load() <= fewest+placeSlack {
		return on
	}
	return least
}

// placeSlack is how many sessions more than the least held a loop may
// hold and still keep those it accepts: a burst of short connections
// mostly starts where it was accepted (no hand-over, no wake-up of
// another loop), a crowd of keep-alive clients spreads.
const placeSlack = 4

// hold counts r among the sessions placed on l (Loops.Place's measure)
// until it ends (unhold).
func (l *loop) hold(r *loopRelay) {
	r.placed = true
	l.held.Add(1)
}

// unhold ends hold's count of r, once.
func (l *loop) unhold(r *loopRelay) {
	if r.placed {
		r.placed = false
		l.held.Add(-1)
	}
}

// pick is loop on when there is one, else the next in turn.
func (ls *loops) pick(on int) int {
	if on >= 0 && on < len(ls.ls) {
		return on
	}
	return int(ls.next.Add(1)) % len(ls.ls)
}

// setPair makes r the relay of its two sockets, front then back, both
// ways, p's bytes first.
func (r *loopRelay) setPair(s *Session, p Pending) {
	s.Rec.reopen(policy.Back) // a tunnel on a connection an earlier exchange gave back: its close is this relay's
	r.x = newExecutor(s)
	f := r.x.addLeg(policy.Front, r.socks[0])
	b := r.x.addLeg(policy.Back, r.socks[1])
	r.x.addDir(f, b)
	r.x.addDir(b, f)
	r.flows = r.flowArr[:2]
	for i := range r.flows {
		r.flows[i] = loopFlow{d: r.x.dirs[i], src: r.socks[i], dst: r.socks[1-i], pipe: noPipe()}
	}
	r.flows[0].seed(p.Up)
	r.flows[1].seed(p.Down)
}

// setLone makes r the end of its one socket, the leg name, as
// Session.End ends it (Runner.End).
func (r *loopRelay) setLone(s *Session, name policy.Leg, e Ending, late int) {
	s.Rec.reopen(name)
	r.x = newExecutor(s)
	lg := r.x.addLeg(name, r.socks[0])
	lg.takeEnding(e)
	r.ending, r.late = e, late
	if !lg.inDone && !e.Cut && late == 0 {
		r.x.addDir(lg, nil)
		r.flows = r.flowArr[:1]
		r.flows[0] = loopFlow{d: r.x.dirs[0], src: r.socks[0], pipe: noPipe()}
	}
	r.lone = lg
}

func newLoopRelay(l *loop, done func()) *loopRelay {
	return &loopRelay{loop: l, done: done, hi: -1}
}

// take makes front and back r's sockets. A duplicate it made is closed
// again when the other socket fails; the connections it duplicated are
// closed once both are taken: the loop keeps each socket through its
// duplicate, so this closes only the descriptor (and takes it out of Go's
// netpoller): no FIN.
func (r *loopRelay) take(front, back Socket) error {
	for i, sk := range [2]Socket{front, back} {
		fs, err := take(sk, r)
		if err != nil {
			for _, o := range r.socks[:i] {
				if o.dupOf != nil {
					_ = unix.Close(o.fd)
				}
			}
			r.socks = nil
			return err
		}
		r.sockArr[i] = fs
		r.socks = r.sockArr[:i+1]
	}
	for _, fs := range r.socks {
		if fs.dupOf != nil {
			_ = fs.dupOf.Close()
			fs.dupOf = nil
		}
	}
	return nil
}

// take makes sk a socket of r. A *net.TCPConn's descriptor is duplicated
// (the caller closes the connection once both legs are taken); when no
// duplicate can be made (out of descriptors, most likely, and the
// goroutines would need descriptors too), the loop uses the connection's
// own descriptor, keeps the connection and closes it through it.
func take(sk Socket, r *loopRelay) (*fdSock, error) {
	if sk.Conn == nil {
		return &fdSock{fd: sk.FD, r: r, watched: sk.Home >= 0}, nil
	}
	if fd, err := dupFD(sk.Conn); err == nil {
		return &fdSock{fd: fd, r: r, dupOf: sk.Conn}, nil
	}
	fd, err := ConnFD(sk.Conn)
	if err != nil {
		return nil, err
	}
	return &fdSock{fd: fd, r: r, own: sk.Conn}, nil
}

func (ls *loops) connect(ctx context.Context, fd int) (int, error) {
	if established(fd) {
		// To a peer on this host the kernel ran the whole handshake inside
		// connect(2): nothing to wait for, so no loop is told (no wake-up
		// on either side); the loop that relays fd registers it.
		return -1, nil
	}
	if err := ctx.Err(); err != nil {
		return -1, err // a caller that cannot wait (pool.Pool.DialNow)
	}
	if err := ls.enter(); err != nil { // Close waits for the answer
		return -1, err
	}
	defer ls.live.Done()
	l := ls.ls[int(ls.next.Add(1))%len(ls.ls)]
	c := &connecting{fd: fd, done: make(chan error, 1)}
	l.post(message{connect: c})
	var err error
	select {
	case err = <-c.done:
	case <-ctx.Done():
		// The loop answers once: the cancel's error, or the connection's
		// if it was established (or failed) first.
		l.post(message{cancel: c, err: ctx.Err()})
		err = <-c.done
	}
	if err != nil {
		return -1, err
	}
	return l.id, nil
}

// forget holds mu so that the loops' epoll descriptors stay open through
// the call: once Close began they may be closed (and their numbers reused),
// and a loop that only waits for its sessions to end ignores fd's events.
func (ls *loops) forget(home, fd int) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.closed && home >= 0 && home < len(ls.ls) {
		_ = unix.EpollCtl(ls.ls[home].epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// enter counts one more session (or Connect) that Close waits for, unless
// Close began.
func (ls *loops) enter() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return ErrLoopsClosed
	}
	ls.live.Add(1)
	return nil
}

func (ls *loops) begin() {
	for _, l := range ls.ls {
		l.post(message{begun: true})
	}
}

func (ls *loops) close() {
	ls.mu.Lock()
	ls.closed = true
	ls.mu.Unlock()
	ls.live.Wait()
	ls.stopOnce.Do(func() {
		close(ls.stop)
		for _, l := range ls.ls {
			l.post(message{quit: true})
		}
	})
	ls.wg.Wait()
}

// dupFD duplicates c's descriptor (close-on-exec; non-blocking, as c's).
func dupFD(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return fd, nil
}

// message is what other goroutines tell a loop.
type message struct {
	add                      *loopRelay
	connect, cancel          *connecting
	listen                   *listenMsg
	err                      error // cancel's
	begun, drain, kill, quit bool
}

// connecting is a Connect waiting for its socket to be established.
type connecting struct {
	fd   int
	done chan error // the one answer (capacity 1)
}

// loop is one event loop. Only its goroutine touches its state, but for
// the inbox.
type loop struct {
	ls       *loops
	id       int      // its index in ls.ls: a Socket's Home
	ep       *os.File // the epoll descriptor, non-blocking, in Go's netpoller
	epfd     int      // ep's descriptor
	rc       syscall.RawConn
	efd      int // an eventfd: post's wake
	events   []unix.EpollEvent
	socks    fdTable
	quiet    []bool // by descriptor: an idle connection left with nothing to read, no edge since (Runner.Quiet)
	connects map[int32]*connecting
	listens  map[int32]*listening // Listen's sockets
	relays   map[*loopRelay]struct{}
	timers   relayHeap
	scratch  []byte         // every read lands here first
	free     [][]byte       // pending buffers to reuse
	again    []*loopRelay   // relays that used their budget with work left
	closing  []int          // descriptors to close once this turn is done
	closingC []*net.TCPConn // and connections (fdSock.own)
	// ended are the relays that ended this turn: each one's done runs once
	// the descriptors closed before it are (flushCloses), so that what
	// done reports (a record's reset, its FIN) has left the host.
	ended    []*loopRelay
	deadline time.Time
	// local is the tasks' own (Runner.Local).
	local any
	// holding are the sockets whose last bytes a send held for a FIN
	// this turn (fdSock.send): pushed out as the turn ends unless it came.
	holding []*fdSock
	// now is this turn's clock: read once as the turn begins and again
	// after a park, for everything the turn does (see Runner.Now).
	now      time.Time
	begun    bool // draining began
	draining bool
	killed   bool
	quit     bool
	exited   chan struct{} // closed when run returns

	mu    sync.Mutex
	inbox []message
	// mail: the inbox has messages. asleep: the loop may park, so post
	// must wake it. Each side stores its flag, then loads the other's: one
	// of them sees the other, and a busy loop costs a poster no write.
	mail, asleep atomic.Bool
	// held counts the sessions Loops.Relay and Loops.Start placed here
	// and that have not ended: what Loops.Place balances.
	held atomic.Int32

	poll   func(uintptr) bool // l.pollOnce, made once
	n      int
	werr   error
	park   bool
	polled int // pollOnce's calls in this wait: a second one means it parked and was woken
}

func newLoop(ls *loops) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &loop{ls: ls, id: len(ls.ls), ep: os.NewFile(uintptr(epfd), "epoll"), epfd: epfd, efd: efd,
		events: make([]unix.EpollEvent, loopEvents), connects: map[int32]*connecting{},
		listens: map[int32]*listening{}, exited: make(chan struct{}), relays: map[*loopRelay]struct{}{}, scratch: make([]byte, chunkSize)}
	l.poll = l.pollOnce
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.release()
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		l.release()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return l, nil
}

func (l *loop) release() {
	_ = unix.Close(l.efd)
	_ = l.ep.Close()
}

// post hands m to the loop, and wakes it if it may be parked.
func (l *loop) post(m message) {
	l.mu.Lock()
	l.inbox = append(l.inbox, m)
	l.mu.Unlock()
	l.mail.Store(true)
	if l.asleep.Load() {
		var one = [8]byte{1}
		_, _ = rawWrite(l.efd, one[:])
	}
}

// run handles events, timers and messages until told to quit.
func (l *loop) run() {
	defer close(l.exited)
	defer l.release()
	for !l.quit {
		l.now = time.Now()
		l.runTimers(l.now)
		l.flushCloses()
		n, err := l.wait()
		if err != nil {
			return // the epoll descriptor failed: nothing can go on
		}
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.efd {
				continue // edge-triggered: each write raises an edge, and nothing is read
			}
			if s := l.socks.get(ev.Fd); s != nil {
				s.ready(ev.Events, l.now)
				if s.r.task != nil {
					l.taskReady(s)
				} else {
					l.pump(s.r)
				}
			} else if c := l.connects[ev.Fd]; c != nil && ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				delete(l.connects, ev.Fd)
				var err error
				if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 && !established(c.fd) {
					err = connectResult(c.fd) // a failed connect always raises EPOLLERR
				}
				c.done <- err
			} else if ln := l.listens[ev.Fd]; ln != nil {
				l.acceptOn(ln)
			} else if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				// An idle connection's peer sent something, its FIN or a
				// reset (Runner.Quiet); a writable edge says nothing of it
				// (a socket just added to the set raises one).
				l.setQuiet(int(ev.Fd), false)
			}
		}
		if l.mail.Load() {
			l.readInbox()
		}
		l.runAgain()
		l.flushCloses()
	}
}

// wait returns the ready events. The goroutine parks in Go's netpoller on
// the epoll descriptor itself — one park and wake per batch, not per
// socket — until the earliest timer, and does not park while relays have
// work left.
func (l *loop) wait() (int, error) {
	var at time.Time
	if len(l.timers) > 0 {
		at = l.timers[0].at
	}
	l.park, l.n, l.werr, l.polled = len(l.again) == 0, 0, nil, 0
	if !at.IsZero() && !at.After(l.now) {
		at, l.park = time.Time{}, false // a look is due: take what is ready and run it
	}
	if !at.Equal(l.deadline) {
		_ = l.ep.SetReadDeadline(at)
		l.deadline = at
	}
	l.asleep.Store(l.park) // before pollOnce's last look at the inbox
	err := l.rc.Read(l.poll)
	l.asleep.Store(false)
	if l.polled > 1 {
		l.now = time.Now() // it parked: the events came later
	}
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
	l.polled++
	l.n, l.werr = rawEpollPoll(int(fd), l.events)
	if l.werr == unix.EINTR {
		l.n, l.werr = 0, nil
	}
	return l.n > 0 || l.werr != nil || !l.park || l.mail.Load()
}

func (l *loop) readInbox() {
	l.mail.Store(false) // before the take: a message posted after it sets it again
	l.mu.Lock()
	in := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, m := range in {
		switch {
		case m.add != nil && m.add.task != nil:
			l.startTask(m.add)
		case m.add != nil:
			l.start(m.add)
		case m.connect != nil:
			l.setQuiet(m.connect.fd, false) // a new socket under the descriptor
			ev := unix.EpollEvent{Events: relayEvents, Fd: int32(m.connect.fd)}
			if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, m.connect.fd, &ev); err != nil {
				m.connect.done <- os.NewSyscallError("epoll_ctl", err)
			} else {
				l.connects[int32(m.connect.fd)] = m.connect
			}
		case m.listen != nil:
			l.listenMessage(m.listen)
		case m.cancel != nil:
			if l.connects[int32(m.cancel.fd)] == m.cancel {
				delete(l.connects, int32(m.cancel.fd))
				m.cancel.done <- m.err
			}
		case m.begun:
			l.begun = true
			for _, r := range l.all() {
				if r.task != nil {
					l.handleTask(r, r.task.Begun)
				}
			}
		case m.drain:
			l.draining = true
			now := l.now
			for _, r := range l.all() {
				if r.task != nil {
					l.handleTask(r, func() { r.task.Drain(now) })
				} else {
					l.handle(r, func() { r.x.onDrain(now) })
				}
			}
		case m.kill:
			l.killed = true
			for _, r := range l.all() {
				if r.task == nil {
					l.handle(r, r.x.onKill)
				}
			}
		case m.quit:
			l.quit = true
		}
	}
}

// all is every loopRelay on the loop now: what an event for all of them
// starts (a task's leg ended alone) waits for the next.
func (l *loop) all() []*loopRelay {
	all := make([]*loopRelay, 0, len(l.relays))
	for r := range l.relays {
		all = append(all, r)
	}
	return all
}

// start registers a loopRelay's sockets and moves it on as far as they let it.
func (l *loop) start(r *loopRelay) {
	l.relays[r] = struct{}{}
	r.x.running = len(r.flows)
	for _, s := range r.socks {
		l.socks.put(s)
	}
	for _, s := range r.socks {
		if s.live {
			continue
		}
		// A socket this loop watches already (Connect) is modified, which
		// tells its state afresh: edges it had while idle were ignored.
		op := unix.EPOLL_CTL_ADD
		if s.watched {
			op = unix.EPOLL_CTL_MOD
		}
		ev := unix.EpollEvent{Events: relayEvents, Fd: int32(s.fd)}
		if err := rawEpollCtl(l.epfd, op, s.fd, &ev); err != nil {
			l.handle(r, func() { r.x.cutAll(OutcomeError, os.NewSyscallError("epoll_ctl", err)) })
			return
		}
	}
	l.handle(r, func() {
		if r.lone != nil && r.late > 0 {
			r.x.rec.Received(r.lone.name, int64(r.late)) // received, whatever became of them
		}
		switch lg := r.lone; {
		case lg != nil && r.ending.Cut && r.ending.Deliver:
			r.x.cutDelivered(lg)
		case lg != nil && r.ending.Cut:
			r.x.rst(lg, r.ending.Why, true)
		case lg != nil && r.late > 0:
			r.x.wholeThenLate(lg) // as in Session.End
		case lg != nil:
			r.x.sendDone(lg)
		default:
			r.x.armIdle(time.Now())
		}
		if l.draining {
			r.x.onDrain(time.Now())
		}
		if l.killed {
			r.x.onKill()
		}
	})
	l.pump(r)
}

// handle runs f, one of the executor's events, then delivers what it
// caused and reschedules the loopRelay. A panic cuts this loopRelay only.
func (l *loop) handle(r *loopRelay, f func()) {
	if r.ended {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			l.crash(r, p)
		}
	}()
	f()
	l.settle(r)
}

// crash ends a loopRelay whose handling panicked: both sockets reset, the
// record says internal_error.
func (l *loop) crash(r *loopRelay, p any) {
	r.x.rec.Outcome(OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
	for _, s := range r.socks {
		if !s.closed {
			_ = s.SetLinger(0)
			_ = s.Close()
		}
	}
	for _, lg := range r.x.legs {
		lg.phase = phaseClosed
	}
	for i := range r.flows {
		r.flows[i].reported = true
	}
	r.x.running = 0
	l.end(r)
}

// settle delivers the reports the goroutine copiers would have sent after
// the executor closed a socket (a read of a closed socket, a write into
// one), then ends the loopRelay or sets its next timer.
func (l *loop) settle(r *loopRelay) {
	for changed := true; changed && !r.ended; {
		changed = false
		for i := range r.flows {
			f := &r.flows[i]
			if !f.reported && (f.src.closed || f.dst != nil && f.dst.closed && f.pending()) {
				l.report(r, f, net.ErrClosed)
				changed = true
			}
		}
	}
	if r.ended {
		return
	}
	if r.x.finished() {
		l.end(r)
		return
	}
	l.schedule(r, r.x.next())
}

// report ends a flow and tells the executor, as a copier does once.
func (l *loop) report(r *loopRelay, f *loopFlow, err error) {
	f.reported = true
	l.putBuf(f.buf)
	f.buf = nil
	f.pipe.close()
	r.x.onResult(result{f.d, f.written, err})
}

func (l *loop) end(r *loopRelay) {
	r.ended = true
	l.unhold(r)
	l.schedule(r, time.Time{})
	delete(l.relays, r)
	for i := range r.flows {
		l.putBuf(r.flows[i].buf)
		r.flows[i].buf = nil
		r.flows[i].pipe.close()
	}
	r.x.releaseHolds()
	l.ended = append(l.ended, r) // done once its sockets are closed: flushCloses
}

// pump moves both flows as far as the sockets let them.
func (l *loop) pump(r *loopRelay) {
	l.handle(r, func() {
		more := false
		for i := range r.flows {
			if f := &r.flows[i]; !f.reported && l.flow(r, f) {
				more = true
			}
		}
		if more && !r.queued {
			r.queued = true
			l.again = append(l.again, r)
		}
	})
}

// runAgain gives the relays that used their budget another turn.
func (l *loop) runAgain() {
	again := l.again
	l.again = nil
	for _, r := range again {
		r.queued = false
		if r.task != nil {
			l.handleTask(r, func() { r.task.Ready(nil) })
		} else {
			l.pump(r)
		}
	}
}

// runTimers gives every loopRelay whose look is due its look.
func (l *loop) runTimers(now time.Time) {
	for len(l.timers) > 0 && !now.Before(l.timers[0].at) {
		r := l.timers[0]
		heap.Pop(&l.timers)
		r.at = time.Time{}
		if r.task != nil {
			l.handleTask(r, func() { r.task.Due(now) })
		} else {
			l.handle(r, func() {
				r.x.onTimer(now)
				r.dropIdlePipes()
			})
		}
	}
}

// dropIdlePipes closes the splice pipe of each direction that moved no
// byte since the relay's last look (idle_timeout's, a quarter of it
// apart) and holds none: a long-lived connection that carried bulk once
// then went quiet holds its two sockets, not six descriptors. Its next
// bulk stream makes a pipe again.
func (r *loopRelay) dropIdlePipes() {
	for i := range r.flows {
		f := &r.flows[i]
		if !f.pipe.ok() || f.inPipe > 0 {
			continue
		}
		if uint32(f.written) == f.looked { // 4 GiB to the byte since would only close a pipe a moment early
			f.pipe.close()
		}
		f.looked = uint32(f.written)
	}
}

// schedule sets r's next look (zero: none).
func (l *loop) schedule(r *loopRelay, at time.Time) {
	switch {
	case at.IsZero() && r.hi >= 0:
		heap.Remove(&l.timers, r.hi)
		r.at = time.Time{}
	case at.IsZero():
	case r.hi >= 0:
		if !at.Equal(r.at) {
			r.at = at
			heap.Fix(&l.timers, r.hi)
		}
	default:
		r.at = at
		heap.Push(&l.timers, r)
	}
}

// flushCloses closes the descriptors the executor closed this turn. Closing
// after the turn keeps a number from being reused by another loopRelay while
// stale events for it are still being handled.
//
// Then the relays that ended run their done: a session's record is
// written only once its sockets are closed, the close's RST or FIN sent.
// A done may end more relays (a task's leg ended alone); their sockets
// are closed before their done runs too.
func (l *loop) flushCloses() {
	l.pushHeld()
	for next := 0; ; { // l.ended[next:] have not run their done
		for _, fd := range l.closing {
			_ = rawClose(fd)
		}
		l.closing = l.closing[:0]
		for i, c := range l.closingC {
			_ = c.Close()
			l.closingC[i] = nil
		}
		l.closingC = l.closingC[:0]
		if next == len(l.ended) {
			break
		}
		for n := len(l.ended); next < n; next++ { // a done may append: the next round
			l.ended[next].done()
			l.ls.live.Done()
			l.ended[next] = nil
		}
	}
	l.ended = l.ended[:0]
}

func (l *loop) getBuf(n int) []byte {
	if n > chunkSize {
		return make([]byte, n)
	}
	if k := len(l.free); k > 0 {
		b := l.free[k-1]
		l.free = l.free[:k-1]
		return b
	}
	return make([]byte, chunkSize)
}

func (l *loop) putBuf(b []byte) {
	if cap(b) == chunkSize && len(l.free) < maxFree {
		l.free = append(l.free, b[:chunkSize])
	}
}

// loopRelay is one session on a loop: the executor, its sockets and the
// flows that stand for the copiers. A relay has two sockets (front, back)
// and two flows (front → back, back → front: the executor's dirs in
// order); a leg that ends alone (Runner.End) has one socket and a flow
// into nowhere (none once its peer's FIN was read).
type loopRelay struct {
	x        *executor
	loop     *loop
	socks    []*fdSock  // in sockArr
	flows    []loopFlow // in flowArr
	sockArr  [2]*fdSock
	flowArr  [2]loopFlow
	task     Task    // a task's, instead of a relay: then x is nil
	runner   *Runner // the task's
	lone     *leg    // the leg that ends alone; nil for a relay
	ending   Ending  // how lone ends
	late     int     // bytes its peer sent that were read already: late data
	done     func()
	hi       int       // index in the loop's timer heap; -1: not in it
	at       time.Time // its next look
	taskDone bool      // the task has nothing left (Runner.Done)
	queued   bool      // in loop.again
	ended    bool
	placed   bool // counted in its loop's held (hold)
}

// flow moves bytes of f as far as the sockets let it, at most flowBudget
// reads; it reports whether the budget ran out with more to read.
func (l *loop) flow(r *loopRelay, f *loopFlow) (more bool) {
	if f.dst == nil {
		return l.sink(r, f)
	}
	for range flowBudget {
		if f.reported || f.src.closed {
			return false // settle reports it
		}
		if f.pending() {
			if !l.flush(r, f) {
				return false
			}
		}
		if !f.src.rd {
			return false
		}
		if f.src.eof {
			if eofHook != nil {
				eofHook()
			}
			return l.took(r, f, 0, nil, "read") // what that read would say, without it
		}
		if f.pipe.ok() {
			n, err := ignoringEINTR(func() (int, error) { return rawSplice(f.src.fd, f.pipe.w, spliceMax) })
			if !l.took(r, f, n, err, "splice") {
				return false
			}
			f.inPipe = n
			if !l.flush(r, f) {
				return false
			}
			continue
		}
		n, err := ignoringEINTR(func() (int, error) { return rawRecv(f.src.fd, l.scratch) })
		if !l.took(r, f, n, err, "read") {
			return false
		}
		if n < len(l.scratch) && !f.src.shut {
			// A short read of a TCP socket emptied its queue, and what
			// comes next raises an edge of its own: no read that would
			// only say EAGAIN. Not once a FIN is in (it showed as
			// EPOLLRDHUP, or comes with an edge of its own): then on to EOF.
			f.src.rd = false
		}
		// A short read once the FIN is in took every byte before it: the
		// next read is EOF. With no error said, not even a reset that came
		// since changes that read (the kernel gives a FIN it has before an
		// error), so it need not be made.
		last := f.src.shut && n < len(l.scratch)
		f.src.eof = last && !f.src.err
		if !l.forward(r, f, n, last) {
			return false
		}
		if n == chunkSize && !f.pending() {
			_ = f.pipe.open() // a bulk stream: splice from now on (or go on with chunks, without a pipe)
		}
	}
	return true
}

// eofHook, when set (tests), is called for each EOF a flow takes without
// the read that would have said it (fdSock.eof).
var eofHook func()

// sink reads what the peer of a leg with nowhere to send its bytes still
// sends, as the executor's sinkLate does: EOF, or late data at the first
// byte.
func (l *loop) sink(r *loopRelay, f *loopFlow) bool {
	if f.reported || f.src.closed || !f.src.rd {
		return false
	}
	n, err := ignoringEINTR(func() (int, error) { return rawRecv(f.src.fd, l.scratch) })
	switch {
	case err == unix.EAGAIN:
		f.src.rd = false
	case err != nil:
		l.report(r, f, os.NewSyscallError("read", err))
	case n == 0:
		l.report(r, f, nil)
	default:
		f.src.got += uint64(n)
		f.written = int64(n)
		l.report(r, f, errLate)
	}
	return false
}

// forward writes the n bytes just read on to f's destination and keeps in
// a pooled buffer what it would not take; reading waits until they are
// written (backpressure).
//
// The last bytes before the source's EOF (last) may wait for the FIN
// the executor answers that EOF with (fdSock.send).
func (l *loop) forward(r *loopRelay, f *loopFlow, n int, last bool) bool {
	w := 0
	if f.dst.wr {
		var err error
		w, err = f.dst.send(l.scratch[:n], last)
		switch {
		case err == unix.EAGAIN:
			f.dst.wr, w = false, 0
		case err != nil:
			l.report(r, f, writeError{os.NewSyscallError("write", err)})
			return false
		}
	}
	f.written += int64(w)
	if w == n {
		f.d.flow.wrote()
		return true
	}
	f.buf = l.getBuf(n - w)
	f.off, f.end = 0, copy(f.buf, l.scratch[w:n])
	return true
}

// flush writes what f holds; false while some is still held (or the flow
// ended).
func (l *loop) flush(r *loopRelay, f *loopFlow) bool {
	if f.dst.closed {
		l.report(r, f, net.ErrClosed)
		return false
	}
	for f.pending() {
		if !f.dst.wr {
			return false
		}
		var n int
		var err error
		if f.inPipe > 0 {
			n, err = ignoringEINTR(func() (int, error) { return rawSplice(f.pipe.r, f.dst.fd, f.inPipe) })
		} else {
			n, err = f.dst.send(f.buf[f.off:f.end], false)
		}
		switch {
		case err == unix.EAGAIN:
			f.dst.wr = false
			return false
		case err != nil:
			l.report(r, f, writeError{os.NewSyscallError("write", err)})
			return false
		}
		f.written += int64(n)
		if f.inPipe > 0 {
			f.inPipe -= n
		} else if f.off += n; f.off == f.end {
			l.putBuf(f.buf)
			f.buf, f.off, f.end = nil, 0, 0
		}
	}
	f.d.flow.wrote()
	return true
}

// took handles what a read or splice from f's source returned: nothing
// yet (wait for the next edge), an error or EOF (the flow reports), or n
// bytes about to be written on, stamped as the copiers stamp them.
func (l *loop) took(r *loopRelay, f *loopFlow, n int, err error, op string) bool {
	switch {
	case err == unix.EAGAIN:
		f.src.rd = false
		return false
	case err != nil:
		l.report(r, f, os.NewSyscallError(op, err))
		return false
	case n == 0:
		f.d.flow.eof()
		l.report(r, f, nil) // EOF, every byte before it written
		return false
	}
	f.src.got += uint64(n)
	f.d.flow.read()
	if f.dst.closed {
		l.report(r, f, net.ErrClosed)
		return false
	}
	f.d.flow.writingFrom(f.src.shut)
	return true
}

// pushHeld sends the bytes still held for a FIN that did not come this
// turn (the policy withholds it, a reset waits for their ACK, the source
// failed, a task went on): before the turn's closes and before the loop
// waits. A socket closed this turn is left alone: its close sends them,
// before its FIN (an RST pushes them first: SetLinger).
func (l *loop) pushHeld() {
	for i, s := range l.holding {
		if s.held && !s.closed {
			_ = rawPush(s.fd)
		}
		s.held = false
		l.holding[i] = nil
	}
	l.holding = l.holding[:0]
}

// loopFlow is one direction of a loopRelay: what a copier is on goroutines.
type loopFlow struct {
	d        *dir
	src, dst *fdSock
	buf      []byte // bytes read and not yet written; nil while none
	off, end int
	pipe     splicePipe // once bulk starts
	inPipe   int        // bytes in the pipe, not yet written
	written  int64
	reported bool
	looked   uint32 // written's low bits at the relay's last look with a pipe (dropIdlePipes): fits reported's padding
}

func (f *loopFlow) pending() bool { return f.end > f.off || f.inPipe > 0 }

// seed queues payload read before the loopRelay (Pending), stamped as prime
// stamps it.
func (f *loopFlow) seed(b []byte) {
	if len(b) == 0 {
		return
	}
	f.d.flow.writing()
	f.buf = append([]byte(nil), b...)
	f.off, f.end = 0, len(b)
}

// fdTable finds a loop's sockets by descriptor, for every event a batch
// brings: a slice indexed by it, as descriptors are small and dense (the
// lowest free one is reused first), rather than a map to hash.
type fdTable []*fdSock

func (t fdTable) get(fd int32) *fdSock {
	if fd < 0 || int(fd) >= len(t) {
		return nil
	}
	return t[fd]
}

func (t *fdTable) put(s *fdSock) {
	if s.fd >= len(*t) {
		*t = append(*t, make([]*fdSock, s.fd+1-len(*t)+max(64, len(*t)/2))...)
	}
	(*t)[s.fd] = s
}

// del forgets s, unless its descriptor went on to another socket already.
func (t fdTable) del(s *fdSock) {
	if t.get(int32(s.fd)) == s {
		t[s.fd] = nil
	}
}

// setQuiet marks fd quiet or not (Runner.Quiet).
func (l *loop) setQuiet(fd int, q bool) {
	switch {
	case fd < 0:
	case fd < len(l.quiet):
		l.quiet[fd] = q
	case q:
		l.quiet = append(l.quiet, make([]bool, fd+1-len(l.quiet)+max(64, len(l.quiet)/2))...)
		l.quiet[fd] = true
	}
}

// fdSock is a leg's socket on a loop: a raw non-blocking descriptor, and
// what edge-triggered epoll said of it.
type fdSock struct {
	fd      int
	own     *net.TCPConn // fd is this connection's own (no duplicate): closed through it
	dupOf   *net.TCPConn // fd duplicates it, until the hand-over closes it
	watched bool         // the loop's epoll set has fd already (Connect)
	// live: a task's socket, watched by this loop with every edge since
	// delivered to it, so rd, wr and shut are current: a relay it goes on
	// to here needs no epoll_ctl.
	live   bool
	r      *loopRelay
	closed bool
	abort  bool      // SetLinger(0): Close resets the connection at once
	rd, wr bool      // readable/writable, learned from edges, cleared by EAGAIN (rd also by a short read)
	shut   bool      // an edge said the peer's FIN or an error is in: read on to EOF
	shutAt time.Time // when that edge came (the loop's time as it woke)
	err    bool      // an edge said an error is in (a reset, a timeout)
	eof    bool      // the next read returns EOF (flow): a short read took the last bytes before a FIN
	ts     *TaskSock // a task's view of it, once asked for
	// held: the last bytes sent went with MSG_MORE and may wait in the
	// kernel for the proxy's FIN; the turn's end sends them if none came.
	held bool
	// got counts the bytes read from the socket through s (reads and
	// splices): all it ever gave when every read went through s, fewer
	// when some went another way first (readThrough).
	got uint64
}

// readThrough returns the bytes read from c's socket through the loop, if
// c is a loop's socket: never more than the kernel delivered, and exactly
// that when every read went through the loop.
func readThrough(c sock) (uint64, bool) {
	s, ok := c.(*fdSock)
	if !ok {
		return 0, false
	}
	return s.got, true
}

// ready takes an edge's events, come at now.
func (s *fdSock) ready(ev uint32, now time.Time) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.rd = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !s.shut {
		s.shut, s.shutAt = true, now
	}
	if ev&unix.EPOLLERR != 0 {
		s.err = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.wr = true
	}
}

func (s *fdSock) SyscallConn() (syscall.RawConn, error) { return s, nil }

// send writes what it can of b. The last bytes before a FIN the proxy
// may send next (last), heldMax or fewer, go with MSG_MORE: the FIN takes
// them along in its segment, or the turn's end pushes them (pushHeld).
func (s *fdSock) send(b []byte, last bool) (int, error) {
	hold := last && len(b) <= heldMax
	n, err := ignoringEINTR(func() (int, error) { return rawSendMore(s.fd, b, hold) })
	if n > 0 {
		if hold && !s.held {
			s.r.loop.holding = append(s.r.loop.holding, s)
		}
		s.held = hold // a send without MSG_MORE pushes what was held
	}
	return n, err
}

func (s *fdSock) CloseWrite() error {
	if s.closed {
		return net.ErrClosed
	}
	s.held = false // the FIN goes out with them
	return os.NewSyscallError("shutdown", rawShutdownWrite(s.fd))
}

func (s *fdSock) SetLinger(sec int) error {
	if s.closed {
		return net.ErrClosed
	}
	if sec != 0 {
		// The loop closes raw, and a linger time would make close wait.
		return fmt.Errorf("setsockopt SO_LINGER %d: a loop's socket lingers 0 or not at all", sec)
	}
	if s.held { // held bytes go out before the RST, as they would have without MSG_MORE
		s.held = false
		_ = rawPush(s.fd)
	}
	s.abort = true // Close resets the connection itself: no SO_LINGER needed
	return nil
}

func (*fdSock) SetDeadline(time.Time) error { return nil } // timers live in the loop

// Close takes the socket out of the loop; its descriptor is closed (a FIN,
// if none was sent yet) once the turn is done. After SetLinger(0) the RST
// goes now: the record says what the kernel did when the engine last
// looked, and a turn is long enough for the peer's FIN or RST to come in
// between and make the close send nothing.
func (s *fdSock) Close() error {
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	if s.abort && rawAbort(s.fd) != nil {
		_ = rawLingerZero(s.fd) // the close sends the RST instead
	}
	l := s.r.loop
	l.socks.del(s)
	if s.own != nil {
		l.closingC = append(l.closingC, s.own)
	} else {
		l.closing = append(l.closing, s.fd)
	}
	return nil
}

// Control runs f on the descriptor while it is open (syscall.RawConn).
func (s *fdSock) Control(f func(fd uintptr)) error {
	if s.closed {
		return net.ErrClosed
	}
	f(uintptr(s.fd))
	return nil
}

func (s *fdSock) Read(func(fd uintptr) bool) error  { return errNotBlocking }
func (s *fdSock) Write(func(fd uintptr) bool) error { return errNotBlocking }

var errNotBlocking = errors.New("a loop's socket is never waited on")

// relayHeap orders relays by their next look.
type relayHeap []*loopRelay

func (h relayHeap) Len() int           { return len(h) }
func (h relayHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h relayHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi, h[j].hi = i, j
}
func (h *relayHeap) Push(v any) {
	r := v.(*loopRelay)
	r.hi = len(*h)
	*h = append(*h, r)
}
func (h *relayHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.hi = -1
	*h = old[:len(old)-1]
	return r
}
