package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop's system calls are made raw: on non-blocking sockets none of them
// waits, but on loopback the kernel runs the peer's TCP receive inline, so a
// write, shutdown or close can take tens of microseconds. Made the usual way
// (entersyscall), that was long enough for the runtime's monitor to hand the
// loop's P to another thread, which cost a thread wake-up and two context
// switches per long call; raw, the loop keeps its P. A raw call must never
// block: only non-blocking descriptors, and close only after SO_LINGER 0 or
// none (never a linger time, which makes close wait).

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func bufPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// rawRecv and rawSend read and write a socket. They are recvfrom and
// sendto rather than read and write: those go through the file layer
// first (fdget_pos, the iov_iter of a write), measurably dearer per call
// on the small messages of a keep-alive exchange; MSG_NOSIGNAL spares
// the process a SIGPIPE (which Go's runtime would catch and ignore) when
// the peer has reset.
func rawRecv(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawSend(fd int, b []byte) (int, error) { return rawSendMore(fd, b, false) }

// heldMax is the most bytes sent held for the FIN (fdSock.send). A peer's
// kernel delays its ACK of a segment that carries a FIN and no more bytes
// than its estimate of the sender's MSS (on a new connection at least
// TCP's default, 536), and then acknowledges the proxy's FIN with its own
// FIN, in one segment: the record's readings prove the proxy's FIN came
// first. Past that it acknowledges at once, and its FIN can come too
// before the proxy's reading after its own: the order is unproved (1.7 %
// of the records of ab's 8,000-byte answers said first_fin unknown when
// those were held). Larger last bytes go out at once, as other bytes do.
const heldMax = 512

// rawSendMore sends b; with more (MSG_MORE) the kernel holds a segment
// shorter than the MSS until the shutdown, which sends bytes and FIN in
// one segment, or a push (rawPush). The peer then acknowledges both at
// once: two segments fewer.
func rawSendMore(fd int, b []byte, more bool) (int, error) {
	flags := unix.MSG_NOSIGNAL
	if more {
		flags |= unix.MSG_MORE
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawPush sends what rawSendMore left held: setting TCP_NODELAY pushes the
// send queue out, whatever MSG_MORE said.
func rawPush(fd int) error {
	on := int32(1)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY,
		uintptr(unsafe.Pointer(&on)), unsafe.Sizeof(on), 0)
	return errnoErr(e)
}

// rawWrite writes a descriptor that is no socket (the loop's eventfd).
func rawWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawSplice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

func rawClose(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errnoErr(e)
}

// CloseFD closes a bare socket descriptor (one the loops may own: see
// Bare) with a raw close: such a socket never has a linger time, so close
// never waits.
func CloseFD(fd int) error { return rawClose(fd) }

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// rawEpollPoll takes the ready events without waiting (timeout 0).
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawQuickAck sets TCP_QUICKACK: what the socket received and has not
// acknowledged yet is acknowledged now, not by the delayed-ACK timer.
func rawQuickAck(fd int) error {
	one := int32(1)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK,
		uintptr(unsafe.Pointer(&one)), 4, 0)
	return errnoErr(e)
}

func rawIoctlInt(fd int, req uint) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// rawLingerZero sets SO_LINGER 0: the close that follows sends an RST
// and never waits (no other linger time is set raw: close would wait it).
func rawLingerZero(fd int) error {
	l := unix.Linger{Onoff: 1, Linger: 0}
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	return errnoErr(e)
}

// rawAbort resets fd's connection now and keeps the descriptor: connect
// with AF_UNSPEC is the kernel's disconnect, what close does with
// SO_LINGER 0 (an RST unless the connection is closed already).
func rawAbort(fd int) error {
	var sa unix.RawSockaddr // Family 0: AF_UNSPEC
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	return errnoErr(e)
}

// RawWriter writes to a TCP connection with raw system calls, waiting in
// Go's netpoller while its send buffer is full; the connection's write
// deadline applies. For the small writes of a request-response exchange
// (http1's heads and small bodies), which pay the same hand-over of the
// goroutine's P on loopback as a relay's writes would.
type RawWriter struct {
	rc   syscall.RawConn
	bufs [2][]byte
	n    int
	err  error
	fn   func(fd uintptr) bool // w.write, bound once

	asked bool                  // Ask: the write is done, the wait is on
	askFn func(fd uintptr) bool // w.ask, bound once
}

// NewRawWriter returns a RawWriter for c.
func NewRawWriter(c *net.TCPConn) (*RawWriter, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &RawWriter{rc: rc}
	w.fn, w.askFn = w.write, w.ask
	return w, nil
}

// Ask writes p whole, as Write does, and then waits in Go's netpoller,
// under the connection's read deadline, until what the peer sends after
// p may be read: a reader that follows reads the reply with one system
// call, where reading at once would first find nothing (a request's
// answer is never there the instant it is sent) and pay a read that
// returns EAGAIN before the wait. The write is made inside the wait's
// own set-up, after Go's netpoller forgot the connection's earlier
// readiness and before any reply can come, so no edge is lost. The
// wait's own error (a deadline, a reset) is not returned: the read that
// follows meets it, as it would have without the wait. Only for a
// message the peer answers once it has it whole (nothing follows p).
func (w *RawWriter) Ask(p []byte) (int, error) {
	w.bufs, w.n, w.err, w.asked = [2][]byte{p, nil}, 0, nil, false
	err := w.rc.Read(w.askFn)
	w.bufs = [2][]byte{}
	if !w.asked { // the read side failed before the write was made
		return w.Write(p)
	}
	_ = err // the wait's: the caller's read meets it
	return w.n, w.err
}

// ask is Ask's turn of the read loop: the first writes (its own write
// lock, apart from the read lock held here) and asks for a wait unless
// the write failed; the next says the connection may be read.
func (w *RawWriter) ask(uintptr) bool {
	if w.asked {
		return true
	}
	w.asked = true
	if err := w.rc.Write(w.fn); err != nil && w.err == nil {
		w.err = err
	}
	return w.err != nil
}

// Write writes p whole, or returns why not.
func (w *RawWriter) Write(p []byte) (int, error) { return w.Writev(p, nil) }

// Writev writes a then b whole in as few system calls as the socket takes
// (one writev when its buffer has room), or returns why not.
func (w *RawWriter) Writev(a, b []byte) (int, error) {
	w.bufs, w.n, w.err = [2][]byte{a, b}, 0, nil
	err := w.rc.Write(w.fn)
	w.bufs = [2][]byte{}
	if err == nil {
		err = w.err
	}
	return w.n, err
}

func (w *RawWriter) write(fd uintptr) bool {
	for len(w.bufs[0])+len(w.bufs[1]) > 0 {
		var iov [2]unix.Iovec
		k := 0
		for _, b := range w.bufs {
			if len(b) > 0 {
				iov[k].Base = &b[0]
				iov[k].SetLen(len(b))
				k++
			}
		}
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.err = os.NewSyscallError("writev", e)
			return true
		}
		w.n += int(n)
		for i := range w.bufs {
			m := min(int(n), len(w.bufs[i]))
			w.bufs[i], n = w.bufs[i][m:], n-uintptr(m)
		}
	}
	return true
}

// established tells whether fd's connect has completed: its TCP state
// (tcpState) is ESTABLISHED, or CLOSE-WAIT: the peer spoke and closed
// already (a backend that greets and closes), and what it sent waits to
// be relayed; or CLOSE after the peer spoke (spokeAndReset).
func established(fd int) bool {
	state, ok := tcpState(fd)
	switch {
	case !ok:
		return false
	case state == unix.BPF_TCP_ESTABLISHED, state == unix.BPF_TCP_CLOSE_WAIT:
		return true
	case state == unix.BPF_TCP_CLOSE:
		return spokeAndReset(fd)
	}
	return false
}

// tcpState reads fd's TCP state: the first byte of TCP_INFO, the only
// byte asked for.
func tcpState(fd int) (uint8, bool) {
	var state [1]byte
	n := uint32(len(state))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&state[0])), uintptr(unsafe.Pointer(&n)), 0)
	return state[0], e == 0 && n == 1
}

// spokeAndReset tells that the peer of fd, closed (CLOSE), sent something
// before its reset: a backend that accepts, writes and resets at once
// (a greeting, a refusal) can do it all before the dialer looks. Its
// bytes wait in the receive queue and its reset behind them (the socket's
// error, left unread): the connection was made, and relaying it delivers
// both, as on any connection. Reading the connect's result (SO_ERROR)
// instead would take the reset for a failed dial, and closing the socket
// would lose what the backend said.
func spokeAndReset(fd int) bool {
	b := infoBufs.Get().(*infoBuf)
	defer infoBufs.Put(b)
	b.getsockopt(uintptr(fd))
	return b.err == 0 && b.info.State == stateClose && b.info.Bytes_received > 0
}

// AwaitConnect waits, in Go's netpoller, for the connect begun on the
// non-blocking socket fd to end, bounded by ctx: nil once established (as
// established says: a backend that spoke and reset is connected), else
// the connect's error, or ctx's wrapped. For a dial without the relay
// loops (Loops.Connect does it there). The wait goes through a duplicate
// of fd, closed before it returns.
func AwaitConnect(ctx context.Context, fd int) error {
	if established(fd) {
		return nil
	}
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	f := os.NewFile(uintptr(d), "connecting") // non-blocking: in the netpoller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	done := false
	werr := rc.Write(func(uintptr) bool {
		done = connectEnded(fd)
		return done
	})
	switch {
	case established(fd):
		return nil
	case done:
		return connectResult(fd)
	case ctx.Err() != nil:
		return fmt.Errorf("connect: %w", ctx.Err())
	case errors.Is(werr, os.ErrDeadlineExceeded): // ctx's, a moment before its own timer
		return fmt.Errorf("connect: %w", context.DeadlineExceeded)
	}
	return fmt.Errorf("connect: %w", werr)
}

// connectEnded tells that fd's connect is no longer under way (SYN-SENT
// or SYN-RECV): established, or failed.
func connectEnded(fd int) bool {
	state, ok := tcpState(fd)
	return !ok || state != unix.BPF_TCP_SYN_SENT && state != unix.BPF_TCP_SYN_RECV
}

// RawReader reads a TCP connection with raw system calls, waiting in Go's
// netpoller while nothing is there to read; the connection's read
// deadline applies. A read made the usual way tells the runtime it may
// block: under load, with every P busy, its system monitor then hands the
// reading goroutine's P to another thread for a read that spans one of
// its 20 µs ticks, and keeps ticking that fast while it finds such reads:
// thread wake-ups and context switches that a read of a non-blocking
// socket never needed. For http1's client and backend readers.
type RawReader struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// NewRawReader returns a RawReader for c.
func NewRawReader(c *net.TCPConn) (*RawReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &RawReader{rc: rc}
	r.fn = r.read
	return r, nil
}

// Read reads what is there, up to len(p), once something is; io.EOF at
// the peer's FIN.
func (r *RawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.rc.Read(r.fn)
	r.p = nil
	if err == nil {
		err = r.err
	}
	return r.n, err
}

func (r *RawReader) read(fd uintptr) bool {
	n, err := ignoringEINTR(func() (int, error) { return rawRecv(int(fd), r.p) })
	switch {
	case err == unix.EAGAIN:
		return false
	case err != nil:
		r.err = os.NewSyscallError("read", err)
	case n == 0:
		r.err = io.EOF
	}
	r.n = n
	return true
}
