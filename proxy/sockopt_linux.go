package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

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

// keepAliveListenConfig sets keep-alive and TCP_NODELAY once, on the
// listening socket: Linux copies both into each accepted socket, where Go
// would otherwise make four setsockopt calls per connection for
// keep-alive (it sets TCP_NODELAY on every socket it accepts anyway; a
// bare accept relies on the copy).
func keepAliveListenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var opErr error
		err := rc.Control(func(fd uintptr) {
			if opErr = setKeepAlive(int(fd), goKeepAlive); opErr == nil {
				opErr = os.NewSyscallError("setsockopt TCP_NODELAY", unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
			}
		})
		return errors.Join(err, opErr)
	}}
}

func setKeepAlive(fd int, k net.KeepAliveConfig) error {
	for _, o := range []struct {
		level, opt, v int
		name          string
	}{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(k.Idle / time.Second), "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(k.Interval / time.Second), "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, k.Count, "TCP_KEEPCNT"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	return nil
}
