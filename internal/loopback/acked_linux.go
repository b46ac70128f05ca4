package loopback

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Acked waits until c's peer acknowledged every byte written to c, at
// most within, and says whether it did. Polling the send queue
// (SIOCOUTQ) is the only way to know the bytes arrived; the deadline
// bounds it.
func Acked(c *net.TCPConn, within time.Duration) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(within); ; time.Sleep(time.Millisecond) {
		q := -1
		_ = raw.Control(func(fd uintptr) { q, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if q == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
