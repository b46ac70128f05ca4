package proxy

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// sendQueue reports the bytes sent on c that the peer has not acknowledged
// yet (SIOCOUTQ). A safe reset waits for it to reach zero.
func sendQueue(c *net.TCPConn) (int, error) {
	var n int
	var opErr error
	err := control(c, func(fd int) {
		n, opErr = unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return 0, os.NewSyscallError("ioctl SIOCOUTQ", err)
	}
	return n, nil
}

// progress is a kernel count that grows whenever bytes move on c in either
// direction: bytes received plus bytes acknowledged by the peer (TCP_INFO).
// Timers compare it before and after a period instead of touching the data
// path.
func progress(c *net.TCPConn) uint64 {
	info := tcpInfo(c)
	if info == nil {
		return 0
	}
	return info.Bytes_received + info.Bytes_acked
}

// awaitingReply reports that the peer acknowledged bytes from us and sent
// none back: it owes an answer and is slow, not silent. (TCP_INFO's
// last-data times have a granularity of a millisecond, too coarse to order
// a request and a fast answer; "nothing came back at all" is exact.)
func awaitingReply(c *net.TCPConn) bool {
	info := tcpInfo(c)
	return info != nil && info.Bytes_acked > 0 && info.Bytes_received == 0
}

// resetByPeer reports that the kernel already closed c because the peer
// reset it.
func resetByPeer(c *net.TCPConn) bool {
	info := tcpInfo(c)
	return info != nil && info.State == unix.BPF_TCP_CLOSE
}

func tcpInfo(c *net.TCPConn) *unix.TCPInfo {
	var info *unix.TCPInfo
	var opErr error
	err := control(c, func(fd int) {
		info, opErr = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || opErr != nil {
		return nil
	}
	return info
}

func control(c *net.TCPConn, f func(fd int)) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	if err := raw.Control(func(fd uintptr) { f(int(fd)) }); err != nil {
		return fmt.Errorf("raw conn control: %w", err)
	}
	return nil
}
