//go:build !linux

package pool

import (
	"net"
	"syscall"
)

// prober cannot peek here: every idle connection is taken as alive, and a
// dead one fails on first use instead.
type prober struct{}

func (*prober) check(syscall.RawConn) liveness { return alive }

// closeReset is a plain close here: a FIN, so TIME-WAIT lands on this side.
func closeReset(c *net.TCPConn) error { return c.Close() }
