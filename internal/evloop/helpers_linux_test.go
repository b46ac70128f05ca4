package evloop

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// ioTimeout bounds every read, write and wait in these tests.
const ioTimeout = 5 * time.Second

// backend serves each connection with handle (loopback.Serve), with a
// deadline on every read and write.
func backend(t testing.TB, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	return netip.MustParseAddrPort(loopback.Serve(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(ioTimeout))
		handle(c)
	}))
}

// start runs a prototype in front of be and closes it when t ends.
func start(t testing.TB, cfg Config) *Server {
	t.Helper()
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// connect connects to a with a deadline on every operation.
func connect(t testing.TB, a netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// waitSessions polls s until n sessions are open: the loop's map is the
// only place that knows, and no event says it changed. Bounded by ioTimeout.
func waitSessions(t testing.TB, s interface{ Sessions() int }, n int) {
	t.Helper()
	for end := time.Now().Add(ioTimeout); s.Sessions() != n; {
		if time.Now().After(end) {
			t.Fatalf("sessions = %d, want %d", s.Sessions(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
