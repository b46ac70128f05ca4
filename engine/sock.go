package engine

import (
	"net"
	"syscall"
	"time"
)

// sock is what the executor does with a leg's socket: a *net.TCPConn when
// the session runs on goroutines, a raw descriptor on a loop (fdSock).
type sock interface {
	syscall.Conn
	CloseWrite() error
	SetLinger(sec int) error
	SetDeadline(t time.Time) error
	Close() error
}

var _ sock = (*net.TCPConn)(nil)

// ConnFD is c's own descriptor, not a duplicate: valid while c is open.
func ConnFD(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}
