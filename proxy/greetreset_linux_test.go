package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend that accepts, writes and resets at once (a greeting or a
// refusal, then SO_LINGER 0) can do it all before the dialer looks at its
// connect. Go's dialer took the reset for a failed dial and closed the
// socket with the greeting in it: on goroutines 132 of 300 such clients
// got nothing, the record dial_failed (the loops 1 of 300). Every client
// gets the greeting, then the reset, and the record says backend_reset
// with the greeting's bytes.
func TestTCPBackendThatSpeaksAndResetsAtOnce(t *testing.T) {
	const greeting = "421 too busy, try later\r\n"
	be := loopback.Serve(t, func(c *net.TCPConn) {
		io.WriteString(c, greeting)
		c.SetLinger(0)
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetPeer, policy.FallbackFIN)})
	const n = 40
	for i := range n {
		got, err := greeted(h.addr, nil)
		if string(got) != greeting || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d of %d read %q, then %v; want the greeting, then ECONNRESET", i+1, n, got, err)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeBackendReset || td.Back.BytesIn != int64(len(greeting)) {
			t.Errorf("client %d of %d: record %s (%v), back bytes_in %d; want backend_reset, %d",
				i+1, n, td.Outcome, td.Err, td.Back.BytesIn, len(greeting))
		}
		if t.Failed() {
			return
		}
	}
}

// greeted connects to addr with a blocking connect (Go's dialer, reading
// the connect's result, would take the proxy passing on the reset before
// it looked for a failed dial, as it did toward the backend), writes
// hello and reads until the end: what came, and how it ended (nil for a
// FIN).
func greeted(addr string, hello []byte) ([]byte, error) {
	to := netip.MustParseAddrPort(addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if len(hello) > 0 {
		if _, err := unix.Write(fd, hello); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
	}
	var got []byte
	b := make([]byte, 512)
	for {
		n, err := unix.Read(fd, b)
		switch {
		case err != nil:
			return got, err
		case n == 0:
			return got, nil
		}
		got = append(got, b[:n]...)
	}
}
