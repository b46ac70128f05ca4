package proxy

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// A client that resets its keep-alive connection between requests (a
// load balancer dropping an idle connection with an RST, as HAProxy
// purges its idle server connections) cut nothing once it acknowledged
// every answer: the record says ok, the front leg's close peer_reset, no
// TIME-WAIT. One that resets with an answer it has not acknowledged, or
// midway through its next head, is client_reset as before.
func TestHTTP1ClientResetBetweenRequests(t *testing.T) {
	o, _ := framedOrigin(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))

	t.Run("every answer acknowledged", func(t *testing.T) {
		c, _ := loopback.KeepAliveGet(t, h.addr, "/length/3000")
		if err := allAcked(c.(*net.TCPConn)); err != nil {
			t.Fatal(err)
		}
		reset(t, c)
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.Err != nil || td.Front.Close != policy.ClosePeerReset ||
			td.Front.TimeWait != policy.SideNone || td.Front.Reason != policy.ReasonPeerReset || td.Front.Cut || td.BackRequests != 1 {
			t.Errorf("record: outcome %s (%v), front close %s, time_wait %s, reason %q, cut %v, %d requests; want ok, peer_reset, none, %s, false, 1",
				td.Outcome, td.Err, td.Front.Close, td.Front.TimeWait, td.Front.Reason, td.Front.Cut, td.BackRequests, policy.ReasonPeerReset)
		}
	})

	t.Run("midway through the next head", func(t *testing.T) {
		c, _ := loopback.KeepAliveGet(t, h.addr, "/length/3000")
		if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHo"); err != nil {
			t.Fatal(err)
		}
		reset(t, c)
		td := h.record(t)
		if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.BackRequests != 1 {
			t.Errorf("record: outcome %s (%v), front close %s, %d requests; want client_reset, peer_reset, 1",
				td.Outcome, td.Err, td.Front.Close, td.BackRequests)
		}
	})

	t.Run("an answer unacknowledged", func(t *testing.T) {
		// A receive buffer smaller than the answer, never read: the
		// proxy's socket holds the rest unacknowledged.
		c, err := rcvBufDialer(4096).DialContext(t.Context(), "tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const size = 12000
		if _, err := fmt.Fprintf(c, "GET /length/%d HTTP/1.1\r\nHost: x\r\n\r\n", size); err != nil {
			t.Fatal(err)
		}
		held, err := stalled(c.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		if held < size {
			t.Fatalf("the client's kernel and the proxy's socket hold %d bytes; want the whole answer (more than %d): the exchange over", held, size)
		}
		reset(t, c)
		td := h.record(t)
		if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.BytesOut >= size {
			t.Errorf("record: outcome %s (%v), front close %s, bytes_out %d; want client_reset, peer_reset, less than the %d-byte body",
				td.Outcome, td.Err, td.Front.Close, td.Front.BytesOut, size)
		}
	})
}

// rcvBufDialer dials with a receive buffer of n bytes (SO_RCVBUF, set
// before the connect, as the window scale depends on it).
func rcvBufDialer(n int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n) }); err != nil {
			return err
		}
		return serr
	}}
}

// reset closes c with an RST (SO_LINGER 0).
func reset(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// allAcked waits until c's kernel acknowledged every byte the proxy's
// socket toward it sent. The kernel gives no signal for that: sock_diag
// is read every 100 µs, for 5 s at most.
func allAcked(c *net.TCPConn) error {
	client, proxy := loopback.AddrPort(c.LocalAddr()), loopback.AddrPort(c.RemoteAddr())
	var p sockdiag.Socket
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		var ok bool
		var err error
		if p, ok, err = sockdiag.Find(proxy, client); err != nil || !ok {
			return fmt.Errorf("sock_diag: %v (found %v)", err, ok)
		}
		if p.Unacked == 0 {
			return nil
		}
	}
	return fmt.Errorf("the proxy's socket holds %d bytes unacknowledged after 5s", p.Unacked)
}

// stalled waits until the proxy's socket toward c, which reads nothing,
// holds bytes unacknowledged and nothing moves for 20 ms, and says how
// many bytes the two sockets hold then: c's unread, the proxy's
// unacknowledged (sock_diag, every 100 µs, for 5 s at most).
func stalled(c *net.TCPConn) (int, error) {
	client, proxy := loopback.AddrPort(c.LocalAddr()), loopback.AddrPort(c.RemoteAddr())
	held, since := -1, time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		cl, okC, errC := sockdiag.Find(client, proxy)
		p, okP, errP := sockdiag.Find(proxy, client)
		if errC != nil || errP != nil || !okC || !okP {
			return 0, fmt.Errorf("sock_diag: %v %v (found %v %v)", errC, errP, okC, okP)
		}
		switch n := int(cl.Unread + p.Unacked); {
		case n != held || p.Unacked == 0:
			held, since = n, time.Now()
		case time.Since(since) >= 20*time.Millisecond:
			return held, nil
		}
	}
	return held, fmt.Errorf("bytes still moving toward the client after 5s (%d held)", held)
}
