package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	sizeofReq  = 56 // struct inet_diag_req_v2
	sizeofMsg  = 72 // struct inet_diag_msg
	sizeofAttr = 4  // struct nlattr
)

// families are the address families dumped, in order.
var families = []uint8{unix.AF_INET, unix.AF_INET6}

// List returns the TCP sockets over IPv4 and IPv6 in any of the states, in
// this process's network namespace.
func List(states ...State) ([]Socket, error) {
	var all []Socket
	for _, family := range families {
		socks, err := dump(family, stateMask(states), nil)
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	return all, nil
}

// ListMatching returns the TCP sockets in any of the states that f
// matches, selected by the kernel: the others never cross into user space.
// A family nothing in f can match is not dumped at all. Should the kernel
// refuse the filter, or f be too large for one, every socket is dumped and
// matched here instead: the result is the same.
func ListMatching(f *Filter, states ...State) ([]Socket, error) {
	var all []Socket
	for _, family := range families {
		bc, conds := bytecode(f, family)
		if conds == 0 {
			continue
		}
		var socks []Socket
		var err error
		if bc != nil {
			socks, err = dump(family, stateMask(states), bc)
		}
		if bc == nil || errors.Is(err, unix.EINVAL) {
			socks, err = dumpMatching(family, stateMask(states), f)
		}
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	return all, nil
}

// Find returns the socket with exactly this local and peer address, in
// any state, looked up by the kernel rather than dumped. A dump is not a
// snapshot: it resumes each reply at a position within a hash bucket, so a
// socket is skipped when one before it goes away between two replies (a
// TIME-WAIT socket expiring, say). A lookup has no such gap: a socket that
// exists throughout is found.
func Find(local, peer netip.AddrPort) (Socket, bool, error) {
	local, peer = netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	family := uint8(unix.AF_INET6)
	if local.Addr().Is4() {
		family = unix.AF_INET // dual-stack sockets talking IPv4 are found as IPv4
	}
	socks, err := exchange(family, lookupRequest(family, local, peer))
	switch {
	case errors.Is(err, unix.ENOENT):
		return Socket{}, false, nil
	case err != nil:
		return Socket{}, false, fmt.Errorf("look up %s→%s: %w", local, peer, err)
	}
	for _, s := range socks {
		// With no connection, the kernel's lookup falls back to a
		// listener on the local port: that is not the socket asked for.
		if s.Local == local && s.Peer == peer {
			return s, true, nil
		}
	}
	return Socket{}, false, nil
}

// lookupRequest builds a SOCK_DIAG_BY_FAMILY request for the one TCP
// socket local→peer (no dump, any cookie).
func lookupRequest(family uint8, local, peer netip.AddrPort) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofReq)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST)
	req := b[unix.NLMSG_HDRLEN:]
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], ^uint32(0))
	id := req[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], peer.Port())
	putAddr(id[4:20], family, local.Addr())
	putAddr(id[20:36], family, peer.Addr())
	binary.NativeEndian.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(id[44:], ^uint32(0))
	return b
}

func putAddr(b []byte, family uint8, a netip.Addr) {
	if family == unix.AF_INET {
		a4 := a.As4()
		copy(b, a4[:])
		return
	}
	a16 := a.As16()
	copy(b, a16[:])
}

// dumpMatching dumps every socket of family and keeps those f matches.
func dumpMatching(family uint8, states uint32, f *Filter) ([]Socket, error) {
	socks, err := dump(family, states, nil)
	if err != nil {
		return nil, err
	}
	match := f.matcher()
	out := socks[:0]
	for _, s := range socks {
		if match(s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func stateMask(states []State) uint32 {
	var mask uint32
	for _, s := range states {
		mask |= 1 << s
	}
	return mask
}

// dump asks the kernel for the sockets of family in states, filtered by the
// bytecode bc when it is not nil.
func dump(family uint8, states uint32, bc []byte) ([]Socket, error) {
	return exchange(family, request(family, states, bc))
}

// exchange sends one sock_diag request and reads every socket of the
// reply, up to NLMSG_DONE (a dump) or the one message of a lookup.
func exchange(family uint8, req []byte) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto sock_diag", err)
	}
	var socks []Socket
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom sock_diag", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("parse sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return socks, nil
			case unix.NLMSG_ERROR:
				return nil, replyError(m.Data)
			}
			if s, ok := parse(family, m.Data); ok {
				socks = append(socks, s)
			}
			if m.Header.Flags&unix.NLM_F_MULTI == 0 {
				return socks, nil // a lookup's single answer
			}
		}
	}
}

// replyError reads an NLMSG_ERROR reply: a negative errno, then the request.
func replyError(d []byte) error {
	if len(d) < 4 {
		return errors.New("sock_diag: kernel returned an error")
	}
	errno := -int32(binary.NativeEndian.Uint32(d))
	return os.NewSyscallError("sock_diag dump", syscall.Errno(errno))
}

// request builds a SOCK_DIAG_BY_FAMILY dump request for TCP, with the
// filter bc as an INET_DIAG_REQ_BYTECODE attribute when it is not nil.
func request(family uint8, states uint32, bc []byte) []byte {
	size := unix.NLMSG_HDRLEN + sizeofReq
	if bc != nil {
		size += sizeofAttr + len(bc) // bc's length is a multiple of 4: no padding
	}
	b := make([]byte, size)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req := b[unix.NLMSG_HDRLEN:]
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], states)
	if bc != nil {
		attr := req[sizeofReq:]
		binary.NativeEndian.PutUint16(attr[0:], uint16(sizeofAttr+len(bc)))
		binary.NativeEndian.PutUint16(attr[2:], inetDiagReqBytecode)
		copy(attr[sizeofAttr:], bc)
	}
	return b
}

// parse reads an inet_diag_msg: family, state, timer, retrans, then the
// socket id (ports big-endian, addresses 16 bytes each), expires, rqueue
// and wqueue.
func parse(family uint8, d []byte) (Socket, bool) {
	if len(d) < sizeofMsg {
		return Socket{}, false
	}
	id := d[4:]
	sport, dport := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	src, dst := addr(family, id[4:20]), addr(family, id[20:36])
	return Socket{
		State:  State(d[1]),
		Local:  netip.AddrPortFrom(src, sport),
		Peer:   netip.AddrPortFrom(dst, dport),
		Unread: binary.NativeEndian.Uint32(d[56:]), Unacked: binary.NativeEndian.Uint32(d[60:]),
	}, true
}

func addr(family uint8, b []byte) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	a := netip.AddrFrom16([16]byte(b[:16]))
	return a.Unmap()
}
