package pool

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prober peeks at an idle connection without consuming anything. Its zero
// value is ready; after the first check, checks allocate nothing. One prober
// must not run two checks at once.
type prober struct {
	buf  [1]byte
	n    int
	err  error
	peek func(fd uintptr) // p.recv, bound once
}

// check reports whether the connection behind raw is alive: a non-blocking
// MSG_PEEK recv finding nothing to read (EAGAIN). Reading 0 bytes means the
// backend closed it; reading data means the stream is out of step.
func (p *prober) check(raw syscall.RawConn) liveness {
	if raw == nil {
		return broken
	}
	if p.peek == nil {
		p.peek = p.recv
	}
	if err := raw.Control(p.peek); err != nil {
		return broken
	}
	switch {
	case p.err == unix.EAGAIN:
		return alive
	case p.err != nil:
		return broken
	case p.n == 0:
		return peerClosed
	default:
		return unexpectedData
	}
}

// recv is recvfrom(2) without a source address: unix.Recvfrom allocates one
// on every call, and Get's check is on the hot path.
func (p *prober) recv(fd uintptr) {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])),
			uintptr(len(p.buf)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		p.n, p.err = int(n), nil
		if errno != 0 {
			p.err = errno
		}
		if errno != unix.EINTR {
			return
		}
	}
}
