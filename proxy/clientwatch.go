package proxy

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/engine"
)

// clientWatch watches a session's client while the session waits for a
// slot in a backend's pool (pool.OnWait), which may take connect_timeout:
// the client's reset cuts the wait short, as nobody is left to serve,
// and its FIN is noted as it comes (a half-close after the request: the
// request stands, and the wait goes on). The watch costs a goroutine and
// a duplicate of the client's socket, and only while the pool makes the
// session wait. Where the kernel's state cannot be read (engine.PeerEndFD,
// off Linux) it ends at once, and the wait at connect_timeout.
type clientWatch struct {
	cancel context.CancelFunc // ends the wait
	f      *os.File           // the duplicate, in Go's poller, while the watch runs
	done   chan struct{}      // closed when the watch's goroutine returned
	reset  atomic.Bool        // the client reset its connection
	finAt  atomic.Int64       // when the client's FIN was seen (UnixNano), or 0
}

// errClientGone: the client reset its connection while its session waited
// for a backend connection.
var errClientGone = errors.New("reset by the client while its session waited for a backend connection")

// start begins watching the client's socket, fd (bare, or the
// connection's; it stays the caller's), unless a watch runs already. A
// socket that cannot be watched is left unwatched: the wait then ends as
// it would have, at connect_timeout.
func (w *clientWatch) start(fd int) {
	if w.f != nil || fd < 0 {
		return
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(dup), "client") // non-blocking: in Go's poller
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return
	}
	w.f, w.done = f, make(chan struct{})
	go func() {
		defer close(w.done)
		defer f.Close() // the duplicate only: the client's socket stays open
		_ = rc.Read(w.look)
	}()
}

// look reads the client's socket's state at each of its edges: true ends
// the watch (the client reset, or the state cannot be read).
func (w *clientWatch) look(fd uintptr) bool {
	fin, reset, ok := engine.PeerEndFD(int(fd))
	switch {
	case reset:
		w.reset.Store(true)
		w.cancel()
	case fin:
		w.finAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	return reset || !ok
}

// stop ends the watch, if one started, and waits for its goroutine.
func (w *clientWatch) stop() {
	if w.f == nil {
		return
	}
	_ = w.f.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	w.f = nil
}

// gone reports that the client reset its connection during the watch.
func (w *clientWatch) gone() bool { return w.reset.Load() }

// fin is when the client's FIN was seen during the watch, or zero.
func (w *clientWatch) fin() time.Time {
	if n := w.finAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}
