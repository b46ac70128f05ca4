package evloop

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop's reads, writes, shutdowns, closes, connects and epoll polls are
// raw system calls, as the proxy's loops make them (engine/raw_linux.go):
// on non-blocking sockets none waits (and no close follows a linger
// time), but on loopback the kernel runs the peer's side inside the
// call, and made the usual way (entersyscall) such a call lets the
// runtime's monitor hand the loop's P to another thread.

func bufPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func rawRead(fd int32, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int32, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawWritev writes a then b in one writev.
func rawWritev(fd int32, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	n := 0
	for _, p := range [2][]byte{a, b} {
		if len(p) > 0 {
			iov[n].Base = &p[0]
			iov[n].SetLen(len(p))
			n++
		}
	}
	w, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(w), nil
}

// rawEpollPoll takes what is ready on epfd without waiting.
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawShutdownWrite(fd int32) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// rawConnect4 starts connect(2) to sa on a non-blocking fd.
func rawConnect4(fd int, sa *unix.SockaddrInet4) error {
	raw := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: sa.Addr}
	port := (*[2]byte)(unsafe.Pointer(&raw.Port))
	port[0], port[1] = byte(sa.Port>>8), byte(sa.Port) // network order
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
	if e != 0 {
		return e
	}
	return nil
}

// rawReadings makes n kernel readings of fd, results unused
// (Config.Readings): one SIOCOUTQ, then TCP_INFO.
func rawReadings(fd int32, n int) {
	if n <= 0 {
		return
	}
	var q int32
	unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&q)))
	var info unix.TCPInfo
	for range n - 1 {
		l := uint32(unsafe.Sizeof(info))
		unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	}
}
