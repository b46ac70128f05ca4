package pool

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Conn is one backend connection handed out by Get. Use the embedded
// *net.TCPConn directly (io.Copy between *net.TCPConns splices on Linux), and
// end with Put or Release, never both.
type Conn struct {
	*net.TCPConn
	Pooled bool          // taken from the idle list rather than dialed for this Get
	Reused bool          // has served at least one request before (returned with Put)
	Uses   int           // how many times Put returned it
	Dial   time.Duration // how long its dial took

	born      time.Time       // when its dial started
	idleSince time.Time       // when it last entered the idle list
	raw       syscall.RawConn // cached for liveness checks, set before it first becomes idle
	probe     prober          // scratch for Get's liveness check; used only by whoever holds c
	out       bool            // handed out, not yet Put or Released (guarded by Pool.mu)
}

// Detach drops c's socket once another owner took its descriptor (the
// relay loops dup it and close this one): c keeps only what Release
// needs, so that a long session does not pin a closed connection.
func (c *Conn) Detach() { c.TCPConn, c.raw, c.probe = nil, nil, prober{} }

// Born returns when c's dial started.
func (c *Conn) Born() time.Time { return c.born }

// prepare caches what the liveness check needs, so that checking an idle
// connection allocates nothing.
func (c *Conn) prepare() {
	if c.raw == nil {
		c.raw, _ = c.TCPConn.SyscallConn()
	}
}

// closeReset closes c with SO_LINGER{on,0}: the kernel sends an RST instead
// of a FIN and keeps no TIME-WAIT. Only for connections with nothing in
// flight: unsent bytes are destroyed.
func closeReset(c *net.TCPConn) error {
	return errors.Join(c.SetLinger(0), c.Close())
}
