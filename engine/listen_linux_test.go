package engine

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenFD is a loopback listener and a duplicate of its descriptor (the
// socket is non-blocking, as Go makes it).
func listenFD(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return ln, fd
}

// takeAll accepts until the backlog is empty and sends each connection's
// loop on got; it closes the connections.
func takeAll(fd, loop int, got chan<- int) {
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		_ = unix.Close(c)
		got <- loop
	}
}

// Every connection to a listener the loops watch reaches accept on one
// of them (and names that loop); once stop returned, a connection in the
// backlog is not taken: the loops' next turns (asked for by a second
// Listen) see no event of the first listener.
func TestListenAcceptsOnTheLoops(t *testing.T) {
	const n, conns = 2, 20
	ls := startLoops(t, n)
	ln, fd := listenFD(t)
	got := make(chan int, conns+1)
	var stopped atomic.Bool
	stop, err := ls.Listen(fd, func(loop int) time.Duration {
		if stopped.Load() {
			t.Errorf("accept called on loop %d after stop returned", loop)
		}
		takeAll(fd, loop, got)
		return 0
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		select {
		case loop := <-got:
			if loop < 0 || loop >= n {
				t.Fatalf("connection %d accepted on loop %d of %d", i, loop, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d never accepted", i)
		}
	}
	stop()
	stopped.Store(true)
	c, err := net.Dial("tcp", ln.Addr().String()) // in the backlog now: the listener is readable
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, fd2 := listenFD(t)
	stop2, err := ls.Listen(fd2, func(int) time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	stop2()
	if len(got) != 0 {
		t.Fatalf("%d connections accepted after stop", len(got))
	}
}

// An accept that asks for a pause is not called again on its loop before
// the pause ran out, and is once it has (the connection it left is still
// there).
func TestListenPauses(t *testing.T) {
	ls := oneLoop(t)
	ln, fd := listenFD(t)
	const pause = 50 * time.Millisecond
	calls := make(chan time.Time, 4)
	got := make(chan int, 1)
	var n atomic.Int32
	stop, err := ls.Listen(fd, func(loop int) time.Duration {
		calls <- time.Now()
		if n.Add(1) == 1 {
			return pause // as out of descriptors: nothing taken
		}
		takeAll(fd, loop, got)
		return 0
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var at [2]time.Time
	for i := range at {
		select {
		case at[i] = <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("accept call %d never came", i+1)
		}
	}
	if d := at[1].Sub(at[0]); d < pause {
		t.Fatalf("accept called again %v after asking for a pause of %v", d, pause)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection left in the backlog was never accepted")
	}
}

// Listen on loops that are closed refuses, and stop after Close returns.
func TestListenAfterClose(t *testing.T) {
	ls, err := NewLoops(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, fd := listenFD(t)
	stop, err := ls.Listen(fd, func(int) time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	ls.Close()
	stop() // the loops are gone: nothing to wait for
	if _, err := ls.Listen(fd, func(int) time.Duration { return 0 }); !errors.Is(err, ErrLoopsClosed) {
		t.Fatalf("Listen after Close: %v, want ErrLoopsClosed", err)
	}
}

// holdTask keeps its connection until the peer closes it.
type holdTask struct {
	rn      *Runner
	sock    *TaskSock
	started chan<- struct{}
	done    chan<- struct{}
	crashed chan<- any
}

func (h *holdTask) Start(rn *Runner, first *TaskSock) {
	h.rn, h.sock = rn, first
	h.started <- struct{}{}
}
func (h *holdTask) Due(time.Time)   {}
func (h *holdTask) Begun()          {}
func (h *holdTask) Drain(time.Time) {}
func (h *holdTask) Crashed(p any)   { panic(p) }
func (h *holdTask) Ready(*TaskSock) {
	var b [16]byte
	for h.sock != nil {
		n, err := h.sock.Read(b[:])
		switch {
		case err == ErrWouldBlock:
			return
		case err != nil || n == 0:
			h.rn.Close(h.sock, false)
			h.sock = nil
			h.rn.Done()
			h.done <- struct{}{}
			return
		}
	}
}

// A crowd of clients that connect at once, as a load balancer's pool
// does, is spread over the loops: the first loop to run after the
// listening socket's event accepts them all, and Place sends each on to
// the loop that holds fewest once the accepting one holds placeSlack
// more. Without Place one loop held them all.
func TestPlaceSpreadsACrowdOverTheLoops(t *testing.T) {
	const n, conns = 2, 32
	ls := startLoops(t, n)
	ln, fd := listenFD(t)
	started, done, crashed := make(chan struct{}, conns), make(chan struct{}, conns), make(chan any, conns)
	listening, err := ls.Listen(fd, func(loop int) time.Duration {
		for {
			c, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if err != nil {
				return 0
			}
			if err := ls.StartOn(ls.Place(loop), &holdTask{started: started, done: done, crashed: crashed}, c); err != nil {
				_ = unix.Close(c)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(listening)
	t.Cleanup(stop)
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for range conns {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the sessions did not all start")
		}
	}
	held := make([]int32, n)
	for i, l := range ls.impl.ls {
		held[i] = l.held.Load()
	}
	if lo, hi := min(held[0], held[1]), max(held[0], held[1]); lo+hi != conns || hi-lo > placeSlack+1 {
		t.Errorf("sessions held by the loops: %v, want %d spread within %d", held, conns, placeSlack+1)
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	for range conns {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the sessions did not all end")
		}
	}
	stop()
	ls.Close() // once it returns every session's end has run on its loop
	for _, l := range ls.impl.ls {
		if h := l.held.Load(); h != 0 {
			t.Errorf("a loop still counts %d sessions once all ended", h)
		}
	}
	select {
	case p := <-crashed:
		t.Errorf("a session's task crashed: %v", p)
	default:
	}
}
