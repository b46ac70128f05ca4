package proxy

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// start begins watching the client's socket, fd (bare, or the
// connection's; it stays the caller's), unless a watch runs already. A
// socket that cannot be watched is left unwatched: the wait then ends as
// it would have, at connect_timeout.
func (w *clientWatch) start(fd int) {
	if w.stopFn != nil || fd < 0 {
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
	w.done = make(chan struct{})
	w.stopFn = func() { _ = f.SetReadDeadline(time.Unix(1, 0)) }
	go func() {
		defer close(w.done)
		defer f.Close() // the duplicate only: the client's socket stays open
		_ = rc.Read(w.look)
	}()
}

// look reads the client's socket's state at each of its edges: true ends
// the watch (the client reset, or the state cannot be read).
func (w *clientWatch) look(fd uintptr) bool {
	info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return true
	}
	switch info.State {
	case unix.BPF_TCP_CLOSE:
		w.reset.Store(true)
		w.cancel()
		return true
	case unix.BPF_TCP_CLOSE_WAIT:
		w.finAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	return false
}
