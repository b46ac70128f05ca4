package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hasNetAdmin reports whether this process holds CAP_NET_ADMIN in its
// effective set, which IP_TRANSPARENT needs.
func hasNetAdmin() (bool, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, fmt.Errorf("read capabilities: %w", err)
	}
	return capEffHas(status, unix.CAP_NET_ADMIN)
}

// transparentDial lets a back-leg socket bind the client's address
// (IP_TRANSPARENT) and leaves its port to connect (IP_BIND_ADDRESS_NO_PORT),
// which picks one unique for the 4-tuple rather than for the address.
func transparentDial(network, _ string, c syscall.RawConn) error {
	return controlOpts(c, transparentOpt(network), boolOpt{unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT"})
}

// transparentListen lets a listening socket accept connections addressed to
// any address that a tproxy rule delivers to it.
func transparentListen(network, _ string, c syscall.RawConn) error {
	return controlOpts(c, transparentOpt(network))
}

// boolOpt is one integer socket option set to 1.
type boolOpt struct {
	level, opt int
	name       string
}

func transparentOpt(network string) boolOpt {
	if network == "tcp6" {
		return boolOpt{unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"}
	}
	return boolOpt{unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"}
}

func controlOpts(c syscall.RawConn, opts ...boolOpt) error {
	var opErr error
	err := c.Control(func(fd uintptr) { opErr = setOpts(int(fd), opts...) })
	if err != nil {
		return fmt.Errorf("raw conn control: %w", err)
	}
	return opErr
}

// setOpts sets each of opts on the socket fd.
func setOpts(fd int, opts ...boolOpt) error {
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			return os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	return nil
}

// originalDst reads the destination a NAT redirect rule replaced:
// SO_ORIGINAL_DST at SOL_IP for an IPv4 connection, also one on a
// dual-stack IPv6 socket (the kernel keeps its IPv4 addresses where the IPv4
// option reads them); IP6T_SO_ORIGINAL_DST, the same number, at SOL_IPV6
// for IPv6.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	var ap netip.AddrPort
	var opErr error
	v4 := addrPort(c.LocalAddr()).Addr().Is4()
	err := control(c, func(fd int) {
		if v4 {
			var sa unix.RawSockaddrInet4
			opErr = getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4)
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
			return
		}
		var sa unix.RawSockaddrInet6
		opErr = getsockopt(fd, unix.SOL_IPV6, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6)
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	return ap, nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return os.NewSyscallError("getsockopt SO_ORIGINAL_DST", errno)
	}
	return nil
}

// ntohs reads a port as the kernel stores it in a sockaddr: big-endian.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// htons stores a port as the kernel wants it in a sockaddr: big-endian.
func htons(p uint16) uint16 { return ntohs(p) }
