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
	sizeofReq = 56 // struct inet_diag_req_v2
	sizeofMsg = 72 // struct inet_diag_msg
)

// List returns the TCP sockets over IPv4 and IPv6 in any of the states, in
// this process's network namespace.
func List(states ...State) ([]Socket, error) {
	var mask uint32
	for _, s := range states {
		mask |= 1 << s
	}
	var all []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := dump(family, mask)
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	return all, nil
}

func dump(family uint8, states uint32) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, request(family, states), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
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
				return nil, errors.New("sock_diag: kernel returned an error")
			}
			if s, ok := parse(family, m.Data); ok {
				socks = append(socks, s)
			}
		}
	}
}

func request(family uint8, states uint32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofReq)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req := b[unix.NLMSG_HDRLEN:]
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], states)
	return b
}

// parse reads an inet_diag_msg: family, state, timer, retrans, then the
// socket id (ports big-endian, addresses 16 bytes each).
func parse(family uint8, d []byte) (Socket, bool) {
	if len(d) < sizeofMsg {
		return Socket{}, false
	}
	id := d[4:]
	sport, dport := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	src, dst := addr(family, id[4:20]), addr(family, id[20:36])
	return Socket{
		State: State(d[1]),
		Local: netip.AddrPortFrom(src, sport),
		Peer:  netip.AddrPortFrom(dst, dport),
	}, true
}

func addr(family uint8, b []byte) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	a := netip.AddrFrom16([16]byte(b[:16]))
	return a.Unmap()
}
