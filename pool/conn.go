package pool

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one backend connection handed out by Get. Use the embedded
// *net.TCPConn directly (io.Copy between *net.TCPConns splices on Linux), and
// end with Put or Release, never both. A connection dialed bare
// (Config.DialBare) has Bare instead, and no *net.TCPConn.
type Conn struct {
	*net.TCPConn
	Bare   *Bare
	Pooled bool          // taken from the idle list rather than dialed for this Get
	Reused bool          // has served at least one request before (returned with Put)
	Uses   int           // how many times Put returned it
	Dial   time.Duration // how long its dial took
	// Kept is its holder's state for it, made once and kept as long as
	// the connection (http1: the raw reader and writer of its
	// exchanges); only whoever holds the connection uses it.
	Kept any

	born      time.Time       // when its dial started
	idleSince time.Time       // when it last entered the idle list
	raw       syscall.RawConn // cached for liveness checks, set before it first becomes idle
	probe     prober          // scratch for Get's liveness check; used only by whoever holds c
	out       bool            // handed out, not yet Put or Released (guarded by Pool.mu)
}

// Detach drops c's socket once another owner took its descriptor (the
// relay loops dup it and close this one): c keeps only what Release
// needs, so that a long session does not pin a closed connection.
func (c *Conn) Detach() {
	c.TCPConn, c.Bare, c.raw, c.probe, c.Kept = nil, nil, nil, prober{}, nil
}

// SetConn makes tc, which took over c's bare socket, c's socket: for a
// holder that waits on goroutines. What c cached of the socket goes.
func (c *Conn) SetConn(tc *net.TCPConn) {
	c.TCPConn, c.Bare, c.raw, c.probe, c.Kept = tc, nil, nil, prober{}, nil
}

// SetBare makes b, which took over c's *net.TCPConn's socket, c's
// socket: for the relay loops. What c cached of the socket goes.
func (c *Conn) SetBare(b *Bare) {
	c.TCPConn, c.Bare, c.raw, c.probe, c.Kept = nil, b, nil, prober{}, nil
}

// Addrs returns c's local and peer addresses (IPv4-mapped unmapped).
func (c *Conn) Addrs() (local, peer netip.AddrPort) {
	if c.Bare != nil {
		return c.Bare.Local, c.Bare.Peer
	}
	return addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
}

func addrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Born returns when c's dial started.
func (c *Conn) Born() time.Time { return c.born }

// Gone reports that c, held with nothing of an exchange sent on it yet,
// can carry none: its backend closed or reset it, or sent bytes nobody
// asked for. It is Get's check of an idle connection, for a holder that
// kept c a while before using it (an http1 request held whole until its
// body came).
func (c *Conn) Gone() bool {
	c.prepare()
	return c.probe.check(c.raw) != alive
}

// prepare caches what the liveness check needs, so that checking an idle
// connection allocates nothing.
func (c *Conn) prepare() {
	switch {
	case c.raw != nil:
	case c.Bare != nil:
		c.raw = fdRaw(c.Bare.FD)
	default:
		c.raw, _ = c.TCPConn.SyscallConn()
	}
}

// fdRaw is a bare descriptor as a syscall.RawConn, for Control only.
type fdRaw int

func (r fdRaw) Control(f func(fd uintptr)) error { f(uintptr(r)); return nil }
func (fdRaw) Read(func(fd uintptr) bool) error   { return errors.ErrUnsupported }
func (fdRaw) Write(func(fd uintptr) bool) error  { return errors.ErrUnsupported }

// closeReset closes c with SO_LINGER{on,0}: the kernel sends an RST instead
// of a FIN and keeps no TIME-WAIT. Only for connections with nothing in
// flight: unsent bytes are destroyed.
func closeReset(c *Conn) error {
	if c.Bare != nil {
		return errors.Join(unix.SetsockoptLinger(c.Bare.FD, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}),
			unix.Close(c.Bare.FD))
	}
	return errors.Join(c.SetLinger(0), c.Close())
}

// Bare is a backend connection as a bare descriptor, for the relay loops:
// it never enters Go's netpoller.
type Bare struct {
	FD          int // non-blocking, close-on-exec
	Home        int // the relay loop that watches FD (engine.Loops.Connect)
	Local, Peer netip.AddrPort
}

// BareDialFunc dials a bare connection. (nil, nil) means not this time:
// the pool dials with its DialFunc instead. Home is -1 when no loop
// watches FD, as for a connection the kernel established inside
// connect(2); with ctx already done (DialNow) only such a connection
// may be returned, else ctx's error.
type BareDialFunc func(ctx context.Context, address string) (*Bare, error)
