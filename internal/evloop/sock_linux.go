package evloop

import (
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockaddr4 is a's address for the raw socket calls; IPv4 only.
func sockaddr4(a netip.AddrPort) (*unix.SockaddrInet4, error) {
	if !a.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("evloop: %s: only IPv4 in the prototype", a)
	}
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}, nil
}

// listen opens a non-blocking listener on a with SO_REUSEPORT, so that
// every loop binds the same port and the kernel spreads connections
// over them. TCP_NODELAY is set once here: accepted sockets inherit it.
func listen(a netip.AddrPort) (int, error) {
	sa, err := sockaddr4(a)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	for _, opt := range []struct {
		level, name int
		what        string
	}{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, "setsockopt SO_REUSEADDR"},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, "setsockopt SO_REUSEPORT"},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, "setsockopt TCP_NODELAY"},
	} {
		if err := unix.SetsockoptInt(fd, opt.level, opt.name, 1); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError(opt.what, err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("evloop: bind %s: %w", a, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("listen", err)
	}
	return fd, nil
}

// boundAddr is the address fd is bound to (once, for port 0).
func boundAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("evloop: listener bound to %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)), nil
}

// dial starts a non-blocking connect to sa without net.Dialer: no
// resolver, no context, one setsockopt. connected reports that it
// completed at once; otherwise EPOLLOUT says when (then read SO_ERROR).
func dial(sa *unix.SockaddrInet4) (fd int, connected bool, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return -1, false, os.NewSyscallError("setsockopt TCP_NODELAY", err)
	}
	switch err := rawConnect4(fd, sa); err {
	case nil:
		return fd, true, nil
	case unix.EINPROGRESS:
		return fd, false, nil
	default:
		unix.Close(fd)
		return -1, false, os.NewSyscallError("connect", err)
	}
}

// connectError is the outcome of a non-blocking connect once EPOLLOUT
// (or EPOLLERR) came: nil when it is established.
func connectError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if v != 0 {
		return os.NewSyscallError("connect", unix.Errno(v))
	}
	return nil
}

// unacked is SIOCOUTQ: bytes sent on fd and not yet acknowledged. A safe
// reset waits for 0.
func unacked(fd int) (int, error) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, os.NewSyscallError("ioctl SIOCOUTQ", err)
	}
	return n, nil
}

// lingerZero makes the next close of fd send an RST instead of a FIN.
func lingerZero(fd int) error {
	err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	return os.NewSyscallError("setsockopt SO_LINGER", err)
}

// accept takes one connection from lfd, non-blocking, with the client's
// address from accept4 itself. It calls the syscall package, as net does:
// x/sys/unix decodes every AF_INET address with one more system call
// (getsockopt SO_PROTOCOL, to tell L2TP apart).
func accept(lfd int) (int, netip.AddrPort, error) {
	fd, sa, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	return fd, addrPort(sa), nil
}

// localAddr is fd's own address (getsockname, through syscall for the
// reason accept gives); the zero value when it cannot be read.
func localAddr(fd int) netip.AddrPort {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return addrPort(sa)
}

func addrPort(sa syscall.Sockaddr) netip.AddrPort {
	if in, ok := sa.(*syscall.SockaddrInet4); ok {
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port))
	}
	return netip.AddrPort{}
}
