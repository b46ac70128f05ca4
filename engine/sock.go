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
