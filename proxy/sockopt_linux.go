package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

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

// infoReader reads one socket's TCP_INFO: a leg reads its socket's counts
// at every state change and timer tick. It keeps only the raw socket; the
// struct read into comes from a pool, so a read allocates nothing and an
// idle leg holds no TCP_INFO (unix.GetsockoptTCPInfo allocates one per
// call, and a closure over one escapes).
type infoReader struct {
	raw syscall.RawConn
}

// tcpCounts is what the legs use of TCP_INFO.
type tcpCounts struct {
	received, acked uint64
	state           uint8
	ok              bool
}

type infoBuf struct {
	info unix.TCPInfo
	err  syscall.Errno
	get  func(fd uintptr) // b.getsockopt, bound once
}

var infoBufs = sync.Pool{New: func() any {
	b := new(infoBuf)
	b.get = b.getsockopt
	return b
}}

func (b *infoBuf) getsockopt(fd uintptr) {
	n := uint32(unsafe.Sizeof(b.info))
	_, _, b.err = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&b.info)), uintptr(unsafe.Pointer(&n)), 0)
}

func (r *infoReader) read(c *net.TCPConn) tcpCounts {
	if r.raw == nil {
		raw, err := c.SyscallConn()
		if err != nil {
			return tcpCounts{}
		}
		r.raw = raw
	}
	b := infoBufs.Get().(*infoBuf)
	defer infoBufs.Put(b)
	if err := r.raw.Control(b.get); err != nil || b.err != 0 {
		return tcpCounts{}
	}
	return tcpCounts{received: b.info.Bytes_received, acked: b.info.Bytes_acked, state: b.info.State, ok: true}
}

// progress is a kernel count that grows whenever bytes move on c in either
// direction: bytes received plus bytes acknowledged by the peer (TCP_INFO).
// Timers compare it before and after a period instead of touching the data
// path.
func (r *infoReader) progress(c *net.TCPConn) uint64 {
	t := r.read(c)
	return t.received + t.acked
}

// awaitingReply reports that the peer acknowledged bytes from us and sent
// none back: it owes an answer and is slow, not silent. (TCP_INFO's
// last-data times have a granularity of a millisecond, too coarse to order
// a request and a fast answer; "nothing came back at all" is exact.)
func (r *infoReader) awaitingReply(c *net.TCPConn) bool {
	t := r.read(c)
	return t.ok && t.acked > 0 && t.received == 0
}

// resetByPeer reports that the kernel already closed c because the peer
// reset it.
func resetByPeer(c *net.TCPConn) bool {
	var r infoReader
	t := r.read(c)
	return t.ok && t.state == unix.BPF_TCP_CLOSE
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

// keepAlive is Go's default for TCP connections: probes after 15 s idle,
// every 15 s, 9 unanswered ones end the connection.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}

// keepAliveListenConfig sets keep-alive once, on the listening socket: Linux copies
// it (and TCP_NODELAY, which Go sets on every accepted socket anyway) into
// each accepted socket, where Go would otherwise make four setsockopt calls
// per connection.
func keepAliveListenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var opErr error
		err := rc.Control(func(fd uintptr) { opErr = setKeepAlive(int(fd), keepAlive) })
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
