package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestLoopsShareOneLoop: many sessions at once on one loop — descriptors
// reused between them, one timer heap, small and bulk streams, clients
// that half-close after their request and clients that close once they
// have the answer — each get every byte both ways (SHA-256 at both ends),
// end with one ok record, and leave no descriptor behind.
func TestLoopsShareOneLoop(t *testing.T) {
	const sessions = 120
	drain, kill := make(chan struct{}), make(chan struct{})
	ls, err := NewLoops(1, drain, kill)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	frontLn, backLn := loopback.Listener(t), loopback.Listener(t)
	fds := loopback.OpenFDs(t)

	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loopSession(ls, frontLn, backLn, i); err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ls.Close()
	if n := loopback.OpenFDs(t); n > fds {
		t.Errorf("%d descriptors more than before the sessions", n-fds)
	}
}

// loopSession relays one session on ls: the client sends a request (every
// seventh one 1 MiB, the rest 200 bytes), the backend reads it to the
// client's half-close or its known length, answers (every fifth 2 MiB)
// and closes; the client reads to EOF.
func loopSession(ls *Loops, frontLn, backLn *net.TCPListener, i int) error {
	var front, back Socket
	var client, proxyFront, proxyBack, backend *net.TCPConn
	if i%3 == 1 {
		// Bare sockets as the proxy makes them: a front the loop takes as
		// it is, a back whose connect the loops watched (Connect), relayed
		// on that loop.
		var err error
		if client, front, err = bareFront(frontLn); err != nil {
			return err
		}
		if backend, back, err = bareBack(ls, backLn); err != nil {
			return err
		}
	} else {
		client, proxyFront = dialPair(frontLn)
		proxyBack, backend = dialPair(backLn)
		front, back = TCP(proxyFront), TCP(proxyBack)
	}
	defer client.Close()
	defer backend.Close()
	reqLen, respLen := 200, 300
	if i%7 == 0 {
		reqLen = 1 << 20
	}
	if i%5 == 0 {
		respLen = 2 << 20
	}
	halfClose := i%2 == 0
	req, reqSum := payload(reqLen, byte(i))
	resp, respSum := payload(respLen, byte(i+1))

	rec := NewRecorder(sessionIDs.Add(1), "web", "app", defFront.TimeWait, defBack.TimeWait)
	rec.Accepted(loopback.AddrPort(client.RemoteAddr()), loopback.AddrPort(client.LocalAddr()), loopback.AddrPort(nil))
	rec.Connected(false, false, loopback.AddrPort(backend.RemoteAddr()), loopback.AddrPort(backend.LocalAddr()))
	done := make(chan struct{})
	s := &Session{Rec: rec, Front: defFront, Back: defBack, Idle: 10 * time.Second}
	if err := ls.Relay(s, front, back, Pending{}, func() { close(done) }); err != nil {
		return err
	}

	backendErr := make(chan error, 1)
	go func() {
		got := make([]byte, reqLen)
		if _, err := io.ReadFull(backend, got); err != nil {
			backendErr <- fmt.Errorf("backend read: %w", err)
			return
		}
		if sha256.Sum256(got) != reqSum {
			backendErr <- fmt.Errorf("backend got a request that differs")
			return
		}
		if halfClose { // the client's FIN follows its request
			if n, err := backend.Read(got[:1]); n != 0 || err != io.EOF {
				backendErr <- fmt.Errorf("backend after the request: %d bytes, %v; want EOF", n, err)
				return
			}
		}
		if _, err := backend.Write(resp); err != nil {
			backendErr <- fmt.Errorf("backend write: %w", err)
			return
		}
		backendErr <- backend.Close()
	}()
	clientGot := readAllAsync(client)
	if err := <-writeAsync(client, req, halfClose); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	c := <-clientGot
	if c.err != nil || c.sum != respSum {
		return fmt.Errorf("client read %d of %d bytes, end %v", c.n, respLen, c.err)
	}
	if err := <-backendErr; err != nil {
		return err
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no end within 10s")
	}
	if td := rec.Done(); td.Outcome != OutcomeOK || td.Front.BytesOut != int64(respLen) || td.Back.BytesOut != int64(reqLen) {
		return fmt.Errorf("record: outcome %s, front out %d, back out %d; want ok, %d, %d",
			td.Outcome, td.Front.BytesOut, td.Back.BytesOut, respLen, reqLen)
	}
	return nil
}

// bareFront is a client of ln and the proxy's end as a bare descriptor.
func bareFront(ln *net.TCPListener) (*net.TCPConn, Socket, error) {
	client, accepted := dialPair(ln)
	fd, err := dupFD(accepted)
	accepted.Close()
	if err != nil {
		client.Close()
		return nil, Socket{}, err
	}
	return client, Bare(fd, -1), nil
}

// bareBack connects a bare socket to ln through ls.Connect and returns
// the backend's end.
func bareBack(ls *Loops, ln *net.TCPListener) (*net.TCPConn, Socket, error) {
	pairing.Lock()
	defer pairing.Unlock()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, Socket{}, err
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, Socket{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	home, err := ls.Connect(ctx, fd)
	if err != nil {
		unix.Close(fd)
		return nil, Socket{}, err
	}
	backend, err := ln.AcceptTCP()
	if err != nil {
		unix.Close(fd)
		return nil, Socket{}, err
	}
	return backend, Bare(fd, home), nil
}

// A connect the kernel finished inside the call (loopback) is answered
// at once and watched by no loop (home -1); one still in progress is
// watched (TestLoopsConnectFails: a full accept queue waits for ctx). So
// is one whose peer spoke and closed before the look (a backend that
// greets and closes: CLOSE-WAIT): its bytes and FIN wait to be relayed.
// Taken for one still in progress, a caller that cannot wait
// (pool.Pool.DialNow) closed it with the bytes unread, an RST, and
// dialed again: the greeting was lost.
func TestLoopsConnectDoneInsideTheCall(t *testing.T) {
	ls, err := NewLoops(2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	ln := loopback.Listener(t)
	fd, err := connectTo(ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if home, err := ls.Connect(context.Background(), fd); err != nil || home != -1 {
		t.Errorf("connect over loopback: home %d, %v; want -1 (no loop watches it), nil", home, err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if home, err := ls.Connect(done, fd); err != nil || home != -1 {
		t.Errorf("connect over loopback, context done: home %d, %v; want -1, nil (nothing to wait for)", home, err)
	}

	backend, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(backend, "220 hello\r\n")
	backend.Close()
	awaitPeerEnd(t, fd, false)
	if home, err := ls.Connect(done, fd); err != nil || home != -1 {
		t.Errorf("connect done, the peer's FIN in: home %d, %v; want -1, nil", home, err)
	}
	b := make([]byte, 64)
	if n, err := unix.Read(fd, b); string(b[:max(n, 0)]) != "220 hello\r\n" {
		t.Errorf("read %q, %v; want the greeting", b[:max(n, 0)], err)
	}
}

// A connect whose backend accepted, wrote and reset before anyone looked
// is a connection made, its bytes and reset waiting to be relayed: both
// Connect (the loops) and AwaitConnect (goroutines) say so, and the reset
// is still there to read after the bytes. Taken for a failed dial (the
// connect's SO_ERROR), the socket was closed with the bytes in it. One
// reset before its backend said anything stays a failed dial.
func TestConnectAfterThePeerSpokeAndReset(t *testing.T) {
	ls, err := NewLoops(2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	ln := loopback.Listener(t)
	connects := map[string]func(fd int) error{
		"Connect": func(fd int) error {
			home, err := ls.Connect(context.Background(), fd)
			if err == nil && home != -1 {
				err = fmt.Errorf("home %d, want -1 (nothing to wait for)", home)
			}
			return err
		},
		"AwaitConnect": func(fd int) error { return AwaitConnect(context.Background(), fd) },
	}
	for name, connect := range connects {
		for _, spoke := range []bool{true, false} {
			fd, err := connectTo(ln.Addr().(*net.TCPAddr).AddrPort())
			if err != nil {
				t.Fatal(err)
			}
			backend, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			if spoke {
				io.WriteString(backend, "421 busy\r\n")
			}
			backend.SetLinger(0)
			backend.Close()
			awaitPeerEnd(t, fd, true)
			err = connect(fd)
			if !spoke {
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s, reset before a byte: %v; want ECONNRESET (a failed dial)", name, err)
				}
				unix.Close(fd)
				continue
			}
			if err != nil {
				t.Errorf("%s, reset after a greeting: %v; want nil (connected)", name, err)
			}
			b := make([]byte, 64)
			n, err := unix.Read(fd, b)
			_, rerr := unix.Read(fd, b[max(n, 0):])
			if string(b[:max(n, 0)]) != "421 busy\r\n" || err != nil || rerr != unix.ECONNRESET {
				t.Errorf("%s: read %q, %v, then %v; want the greeting, then ECONNRESET", name, b[:max(n, 0)], err, rerr)
			}
			unix.Close(fd)
		}
	}
}

// Connect and AwaitConnect report a refused connection as connect's
// error, and one that does not come within the context's deadline as the
// context's; Connect answers once either way; nothing is left open once
// the socket is closed.
func TestLoopsConnectFails(t *testing.T) {
	ls, err := NewLoops(2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	fds := loopback.OpenFDs(t)

	closed := loopback.Listener(t)
	refusedAt := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()
	fd, err := connectTo(refusedAt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Connect(context.Background(), fd); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
	unix.Close(fd)
	if fd, err = connectTo(refusedAt); err != nil {
		t.Fatal(err)
	}
	if err := AwaitConnect(context.Background(), fd); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("AwaitConnect to a closed port: %v, want ECONNREFUSED", err)
	}
	unix.Close(fd)

	// A listener whose accept queue is full drops further SYNs: the
	// connect waits until the deadline.
	fullAt, closeFull := loopback.FullQueue(t)
	fd, err = connectTo(fullAt)
	if err != nil {
		t.Fatal(err)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := ls.Connect(done, fd); !errors.Is(err, context.Canceled) {
		t.Errorf("connect to a full queue, context done: %v, want the context's error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := ls.Connect(ctx, fd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("connect to a full queue: %v, want the context's deadline", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := AwaitConnect(ctx, fd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AwaitConnect to a full queue: %v, want the context's deadline", err)
	}
	if err := AwaitConnect(done, fd); !errors.Is(err, context.Canceled) {
		t.Errorf("AwaitConnect to a full queue, context done: %v, want the context's error", err)
	}
	unix.Close(fd)
	closeFull()
	ls.Close()
	if n := loopback.OpenFDs(t); n > fds {
		t.Errorf("%d descriptors more than before", n-fds)
	}
}

// awaitPeerEnd polls the socket fd until its peer's FIN (or with reset,
// its reset) is in: on loopback at once, a bounded look at kernel state.
func awaitPeerEnd(t *testing.T, fd int, reset bool) {
	t.Helper()
	what := map[bool]string{false: "FIN", true: "reset"}[reset]
	for i := 0; ; i++ {
		if fin, rst, _ := PeerEndFD(fd); reset && rst || !reset && fin {
			return
		}
		if i == 1000 {
			t.Fatalf("the backend's %s never came", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// connectTo starts a non-blocking connect to a.
func connectTo(a netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// A loop's turn keeps the clock it read as it began, unless the turn
// parked: events that woke it came later, and what handles them must
// not see the time before the park. Driven on wait itself, with pollOnce
// wrapped so that the message that wakes the loop is posted only after
// the first look found nothing (so it certainly parks, or is about to).
func TestTurnClockIsReadAgainAfterAPark(t *testing.T) {
	l, err := newLoop(&loops{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	stale := time.Now().Add(-time.Hour)

	// Not parked: a message waits, the first look returns at once.
	l.post(message{begun: true})
	l.now = stale
	if _, err := l.wait(); err != nil {
		t.Fatal(err)
	}
	if !l.now.Equal(stale) {
		t.Errorf("a turn that did not park read the clock again: %v", l.now)
	}
	l.readInbox()

	// Parked: the message comes after the first look.
	looked := make(chan struct{})
	first := true
	l.poll = func(fd uintptr) bool {
		more := l.pollOnce(fd)
		if first {
			first = false
			close(looked)
		}
		return more
	}
	sent := make(chan time.Time, 1)
	go func() {
		<-looked
		sent <- time.Now()
		l.post(message{begun: true})
	}()
	l.now = stale
	if _, err := l.wait(); err != nil {
		t.Fatal(err)
	}
	if posted := <-sent; l.now.Before(posted) {
		t.Errorf("after a park the turn's clock is %v, before the message that woke it (%v)", l.now, posted)
	}
}

// TestLoopRelayDoneAfterItsSocketsClosed: a relay's done, which writes
// its session's record, runs only once the loop has closed its sockets:
// the RST or FIN the record tells of has left by then.
func TestLoopRelayDoneAfterItsSocketsClosed(t *testing.T) {
	ls := oneLoop(t)
	frontLn, backLn := loopback.Listener(t), loopback.Listener(t)
	client, front, err := bareFront(frontLn)
	if err != nil {
		t.Fatal(err)
	}
	proxyBack, backend := dialPair(backLn)
	defer client.Close()
	defer backend.Close()
	var st unix.Stat_t
	if err := unix.Fstat(front.FD, &st); err != nil {
		t.Fatal(err)
	}
	// The front's descriptor is still this socket (not closed, nor its
	// number reused since) when done runs: a failure.
	openAtDone := make(chan bool, 1)
	done := func() {
		var now unix.Stat_t
		openAtDone <- unix.Fstat(front.FD, &now) == nil && now.Ino == st.Ino && now.Dev == st.Dev
	}
	rec := NewRecorder(sessionIDs.Add(1), "web", "app", defFront.TimeWait, defBack.TimeWait)
	s := &Session{Rec: rec, Front: defFront, Back: defBack, Idle: 10 * time.Second}
	if err := ls.Relay(s, front, TCP(proxyBack), Pending{}, done); err != nil {
		t.Fatal(err)
	}
	clientGot := readAllAsync(client)
	if err := <-writeAsync(client, []byte("request"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(backend, make([]byte, len("request"))); err != nil {
		t.Fatalf("backend read: %v", err)
	}
	if _, err := backend.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	backend.Close()
	if got := recv(t, clientGot, 10*time.Second, "the client's read"); got.err != nil || got.n != int64(len("answer")) {
		t.Fatalf("client read %d bytes, %v", got.n, got.err)
	}
	if recv(t, openAtDone, 10*time.Second, "the relay's done") {
		t.Error("done ran with the proxy's front socket still open")
	}
}
