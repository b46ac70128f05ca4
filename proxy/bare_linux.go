package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/pool"
)

// bareWaiter makes what acceptFD waits on: a duplicate of ln's socket as
// an *os.File in Go's netpoller (a listener's own RawConn cannot wait).
// Close it with ln: while it is open, the socket listens.
func bareWaiter(ln net.Listener) (*os.File, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, err
	}
	d, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { d, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return os.NewFile(uintptr(d), "listener"), nil
}

// acceptFD takes the next connection of the listener that w duplicates
// (bareWaiter) as a bare descriptor (non-blocking, close-on-exec) that
// never enters Go's netpoller: a session the relay loops will own costs
// no netpoller registration, no duplicate and no close of a *net.TCPConn
// on its way there. The goroutine waits in Go's netpoller, as Accept does.
// peer is the client's address. The socket has TCP_NODELAY and keep-alive
// from the listening socket (keepAliveListenConfig).
func acceptFD(w *os.File) (fd int, peer netip.AddrPort, err error) {
	rc, err := w.SyscallConn()
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	var opErr syscall.Errno
	err = rc.Read(func(s uintptr) bool {
		for {
			fd, peer, opErr = accept4(s)
			switch opErr {
			case unix.EINTR, unix.ECONNABORTED:
				continue // as Go's Accept: the next one
			case unix.EAGAIN:
				return false
			}
			return true
		}
	})
	switch {
	case err != nil:
		return -1, netip.AddrPort{}, err
	case opErr != 0:
		return -1, netip.AddrPort{}, os.NewSyscallError("accept4", opErr)
	}
	return fd, peer, nil
}

// accept4 takes one connection of the non-blocking listening socket s, as
// a non-blocking, close-on-exec descriptor.
func accept4(s uintptr) (int, netip.AddrPort, syscall.Errno) {
	var sa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	// unix.Accept4 would also ask every IPv4 socket its protocol (a
	// getsockopt) to tell L2TP apart. Raw: on a non-blocking socket it
	// never waits (see dialBare).
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, s, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawPort(&sa), 0
}

// takeQueued accepts, without waiting, every connection ln's kernel
// completed that no accept took yet (accept4 until EAGAIN), as bare
// descriptors: a listening socket closed with them resets them.
func takeQueued(ln net.Listener) []queued {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	var q []queued
	_ = rc.Control(func(s uintptr) {
		for {
			fd, peer, e := accept4(s)
			switch e {
			case 0:
				q = append(q, queued{fd, peer})
				continue
			case unix.EINTR, unix.ECONNABORTED:
				continue
			}
			return // EAGAIN: none left; anything else ends the take as well
		}
	})
	return q
}

// listenOnLoops has the relay loops accept l's connections (Loops.Listen)
// instead of a goroutine: a session that starts on the loop that accepted
// it costs no wake-up of another goroutine on its way there. False: there
// are no loops, l has no bare waiter, or the loops refused; a goroutine
// accepts (acceptLoop).
func (s *Server) listenOnLoops(l *listener) bool {
	ls := s.loops.Load()
	if ls == nil || l.wait == nil {
		return false
	}
	rc, err := l.wait.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return false
	}
	stop, err := ls.Listen(fd, func(home int) time.Duration { return s.acceptOn(l, fd, home) })
	if err != nil {
		s.log.Warn("relay loops cannot accept; a goroutine does", zap.String("listener", l.conf.Load().cfg.Name), zap.Error(err))
		return false
	}
	l.unlisten = stop
	return true
}

// acceptBudget is how many connections a loop takes from a listener in
// one turn before its sessions get theirs; the rest wait for the next
// turn (the loops watch listeners level-triggered).
const acceptBudget = 16

// acceptOn takes up to acceptBudget connections of l (whose socket is
// fd) on relay loop home, and starts their sessions as acceptLoop does.
// The pause is the backoff after an error that passes (out of
// descriptors or memory); an error that does not is Serve's end, as
// acceptLoop's.
func (s *Server) acceptOn(l *listener, fd, home int) (pause time.Duration) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("accept on a relay loop panicked", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	for range acceptBudget {
		c, peer, e := accept4(uintptr(fd))
		switch e {
		case 0:
		case unix.EAGAIN:
			return 0
		case unix.EINTR, unix.ECONNABORTED:
			continue
		default:
			return s.acceptFailed(l, os.NewSyscallError("accept4", e))
		}
		if l.backoff.Load() != 0 {
			l.backoff.Store(0)
		}
		s.acceptedFD(l, c, peer, s.place(home))
	}
	return 0
}

// place is the loop a session accepted on loop home runs on
// (engine.Loops.Place).
func (s *Server) place(home int) int {
	if ls := s.loops.Load(); ls != nil {
		return ls.Place(home)
	}
	return home
}

// acceptFailed is the pause after an accept error on a loop: a backoff
// that doubles, from 5ms up to a second, while the error passes; a
// second after one that does not, which ends Serve.
func (s *Server) acceptFailed(l *listener, err error) time.Duration {
	name := l.conf.Load().cfg.Name
	if !isTemporary(err) {
		select {
		case s.fatal <- fmt.Errorf("listener %q: accept: %w", name, err):
		default:
		}
		return time.Second
	}
	backoff := min(max(2*time.Duration(l.backoff.Load()), 5*time.Millisecond), time.Second)
	l.backoff.Store(int64(backoff))
	if outOfFiles(err) {
		go s.releaseFiles() // two collections: not on a loop
	}
	s.log.Warn("accept failed; backing off", zap.String("listener", name), zap.Duration("backoff", backoff), zap.Error(err))
	return backoff
}

// rawPort is the address in sa (IPv4 or IPv6, IPv4-mapped unmapped).
func rawPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), ntohs(a.Port))
	}
	return netip.AddrPort{}
}

// localFD is the address a bare connection was accepted on: the
// listener's own when it is bound to one address, else the kernel's.
func localFD(fd int, ln netip.AddrPort) netip.AddrPort {
	if ln.Addr().IsValid() && !ln.Addr().IsUnspecified() {
		return ln
	}
	var sa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}
	}
	return rawPort(&sa)
}

// fdConn makes a bare connection a *net.TCPConn, for a session that cannot
// go to the loops after all. fd is closed when that worked, and still open
// when it did not.
func fdConn(fd int) (*net.TCPConn, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	tc, err := ownConn(d)
	if err != nil {
		return nil, err
	}
	_ = unix.Close(fd)
	return tc, nil
}

// ownConn makes the socket fd a *net.TCPConn (net.FileConn: a duplicate
// in Go's netpoller, with Go's keep-alive, goKeepAlive) and closes fd,
// whether that worked or not.
func ownConn(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "socket") // named in net.FileConn's errors
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_ = c.Close()
		return nil, syscall.EPROTOTYPE
	}
	return tc, nil
}

// dialBare opens a bare connection to a backend at to (beginConnect),
// whose connect Loops.Connect sees through, bounded by ctx (Home -1 when
// the kernel finished it inside the call, as to a backend on this host).
// The socket never enters Go's netpoller: a relay on the loop that
// watches it (or the first loop to relay it) duplicates nothing and
// closes it once.
func dialBare(ctx context.Context, ls *engine.Loops, to netip.AddrPort, keepAlive bool) (*pool.Bare, error) {
	fd, to, err := beginConnect(to, netip.Addr{}, keepAlive)
	if err != nil {
		return nil, err
	}
	home, err := ls.Connect(ctx, fd)
	if err != nil {
		_ = engine.CloseFD(fd)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = fmt.Errorf("connect: %w", err)
		}
		return nil, err
	}
	return &pool.Bare{FD: fd, Home: home, Local: localFD(fd, netip.AddrPort{}), Peer: to}, nil
}

// dialDirect dials to for a session on goroutines, from the address from
// when it is valid (source = "client"): beginConnect, its end awaited in
// Go's netpoller (engine.AwaitConnect), then the socket as a
// *net.TCPConn. Go's dialer reads the connect's result (SO_ERROR), which
// takes a backend that accepted, wrote and reset before the dialer looked
// for a failed dial, and its bytes were lost with the socket; here they
// are relayed, and its reset after them.
func dialDirect(ctx context.Context, to netip.AddrPort, from netip.Addr, keepAlive bool) (*net.TCPConn, error) {
	fd, _, err := beginConnect(to, from, false) // net.FileConn sets keep-alive
	if err != nil {
		return nil, err
	}
	if err := engine.AwaitConnect(ctx, fd); err != nil {
		_ = engine.CloseFD(fd)
		return nil, err
	}
	c, err := ownConn(fd)
	if err != nil {
		return nil, err
	}
	if !keepAlive {
		if err := c.SetKeepAlive(false); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("setsockopt SO_KEEPALIVE: %w", err)
		}
	}
	return c, nil
}

// beginConnect begins a connect to a backend at to (returned unmapped):
// a non-blocking socket with TCP_NODELAY (as Go's dialer sets it) and,
// with keepAlive, keep-alive probes as Go's dialer would set them. A valid
// from is bound first, transparently (source = "client": a client's
// address, its port left to the connect, transparentDial).
func beginConnect(to netip.AddrPort, from netip.Addr, keepAlive bool) (fd int, _ netip.AddrPort, err error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	sa, size := sockaddr(to)
	// Raw calls on a non-blocking socket: none waits, but on loopback
	// connect runs the backend's SYN handling inline, long enough that a
	// call made the usual way (entersyscall) would let the runtime hand this
	// goroutine's P to another thread: a wake-up and two context switches.
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(sa.Addr.Family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, to, os.NewSyscallError("socket", e)
	}
	fd = int(r)
	defer func() {
		if err != nil {
			_ = engine.CloseFD(fd)
			fd = -1
		}
	}()
	one := int32(1)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
		return fd, to, os.NewSyscallError("setsockopt TCP_NODELAY", e)
	}
	if keepAlive {
		if err := setKeepAlive(fd, goKeepAlive); err != nil {
			return fd, to, err
		}
	}
	if from.IsValid() {
		if err := bindTransparent(fd, from, to.Addr().Is6()); err != nil {
			return fd, to, err
		}
	}
	switch _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), size); e {
	case 0, unix.EINPROGRESS, unix.EINTR: // EINTR: the connect goes on
	default:
		return fd, to, os.NewSyscallError("connect", e)
	}
	return fd, to, nil
}

// bindTransparent binds fd, a socket of the IPv6 family when v6, to from
// with IP_TRANSPARENT (an address not this host's) and
// IP_BIND_ADDRESS_NO_PORT (the port chosen at connect, per 4-tuple), as
// transparentDial does for Go's dialer.
func bindTransparent(fd int, from netip.Addr, v6 bool) error {
	opt := transparentOpt("tcp4")
	if v6 {
		opt = transparentOpt("tcp6")
		from = netip.AddrFrom16(from.As16()) // an IPv6 socket binds an IPv6 address
	}
	if err := setOpts(fd, opt, boolOpt{unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT"}); err != nil {
		return err
	}
	sa, size := sockaddr(netip.AddrPortFrom(from, 0))
	if _, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), size); e != 0 {
		return fmt.Errorf("bind %s: %w", from, os.NewSyscallError("bind", e))
	}
	return nil
}

// sockaddr is ap as the kernel takes it: an IPv6 one for an IPv6
// address (IPv4-mapped ones included), else IPv4; and its size.
func sockaddr(ap netip.AddrPort) (unix.RawSockaddrAny, uintptr) {
	var sa unix.RawSockaddrAny
	if ap.Addr().Is6() {
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa))
		a.Family, a.Port, a.Addr = unix.AF_INET6, htons(ap.Port()), ap.Addr().As16()
		return sa, unix.SizeofSockaddrInet6
	}
	a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
	a.Family, a.Port, a.Addr = unix.AF_INET, htons(ap.Port()), ap.Addr().As4()
	return sa, unix.SizeofSockaddrInet4
}
