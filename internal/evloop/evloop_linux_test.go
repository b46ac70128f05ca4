package evloop

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// answerAndClose is the short-connection backend: it reads the request,
// answers and closes first.
func answerAndClose(req, resp string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		defer c.Close()
		buf := make([]byte, len(req))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != req {
			return
		}
		c.Write([]byte(resp))
	}
}

func TestShortConnectionsRelayAndEnd(t *testing.T) {
	be := backend(t, answerAndClose("ping", "pong and goodbye"))
	s := start(t, Config{Backend: be, Loops: 2})
	for range 20 {
		c := connect(t, s.Addr())
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "pong and goodbye" {
			t.Fatalf("read %q, %v; want the answer, then EOF", got, err)
		}
		c.Close()
	}
	waitSessions(t, s, 0)
}

func TestHalfCloseKeepsTheOpenDirection(t *testing.T) {
	be := backend(t, func(c *net.TCPConn) {
		defer c.Close()
		got, err := io.ReadAll(c) // ends only if the client's FIN is passed on
		if err != nil {
			return
		}
		c.Write(append([]byte("got "), got...))
	})
	s := start(t, Config{Backend: be})
	c := connect(t, s.Addr())
	c.Write([]byte("upload"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got upload" {
		t.Fatalf("read %q, %v; want %q, then EOF", got, err, "got upload")
	}
}

// The backend sends the first FIN on the back leg and then reads: a FIN
// from the proxy reads as EOF (TIME-WAIT stays on the backend); a safe
// reset reads as ECONNRESET (no TIME-WAIT on either side).
func TestBackLegEndsByFINOrSafeReset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		safeReset bool
		want      error
	}{
		{"back leg, backend ends first, FIN passed on", false, io.EOF},
		{"back leg, backend ends first, safe reset", true, syscall.ECONNRESET},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan error, 1)
			be := backend(t, func(c *net.TCPConn) {
				defer c.Close()
				c.Write([]byte("answer"))
				c.CloseWrite()
				_, err := c.Read(make([]byte, 1))
				seen <- err
			})
			s := start(t, Config{Backend: be, SafeReset: tc.safeReset})
			c := connect(t, s.Addr())
			if got, err := io.ReadAll(c); err != nil || string(got) != "answer" {
				t.Fatalf("client read %q, %v", got, err)
			}
			c.Close()
			if err := <-seen; !errors.Is(err, tc.want) {
				t.Fatalf("backend read %v after the client left, want %v", err, tc.want)
			}
			waitSessions(t, s, 0)
		})
	}
}

func TestCutsAreResets(t *testing.T) {
	t.Run("dial fails", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close() // nothing listens there now: connect is refused
		s := start(t, Config{Backend: closed})
		// The RST may come before the client's connect has returned.
		c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(s.Addr()))
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			_, err = c.Read(make([]byte, 1))
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client got %v, want ECONNRESET", err)
		}
	})
	t.Run("server closes with a session open", func(t *testing.T) {
		be := backend(t, func(c *net.TCPConn) {
			defer c.Close()
			io.Copy(c, c)
		})
		s := start(t, Config{Backend: be})
		c := connect(t, s.Addr())
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read %v, want ECONNRESET", err)
		}
	})
}

func TestStartRefusesIPv6Backend(t *testing.T) {
	if _, err := Start(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Backend: netip.MustParseAddrPort("[::1]:80")}); err == nil {
		t.Fatal("Start accepted an IPv6 backend")
	}
}

// 8 MiB each way overflow the socket buffers, so writes meet EAGAIN and
// bytes wait in pooled buffers while reading that direction stops.
func TestBulkBothWaysThroughFullBuffers(t *testing.T) {
	const size = 8 << 20
	pattern := func(i int) byte { return byte(i*7 + i>>11) }
	be := backend(t, func(c *net.TCPConn) {
		defer c.Close()
		sent := make(chan struct{})
		defer func() { <-sent }() // before the Close
		go func() {               // send while the client's upload still flows
			defer close(sent)
			b := make([]byte, size)
			for i := range b {
				b[i] = pattern(i)
			}
			c.Write(b)
			c.CloseWrite()
		}()
		n, _ := io.Copy(io.Discard, c)
		if n != size {
			t.Errorf("backend read %d bytes, want %d", n, size)
		}
	})
	s := start(t, Config{Backend: be})
	c := connect(t, s.Addr())
	up := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, size))
		if err == nil {
			err = c.CloseWrite()
		}
		up <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != size {
		t.Fatalf("client read %d bytes, %v; want %d, then EOF", len(got), err, size)
	}
	for i, b := range got {
		if b != pattern(i) {
			t.Fatalf("byte %d = %d, want %d", i, b, pattern(i))
		}
	}
	if err := <-up; err != nil {
		t.Fatal(err)
	}
	waitSessions(t, s, 0)
}

// A safe reset waits for every byte sent to be acknowledged; a backend
// that stops reading never acknowledges them, so after DrainTimeout the
// leg ends with a FIN, and the backend still gets every byte, then EOF.
func TestSafeResetFallsBackToFINWhenUnacked(t *testing.T) {
	const size = 8 << 10 // fits the proxy's send buffer, not the backend's receive window
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { // accepted sockets inherit it, and their window
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := start(t, Config{Backend: ln.Addr().(*net.TCPAddr).AddrPort(), SafeReset: true, DrainTimeout: 20 * time.Millisecond})
	c := connect(t, s.Addr())
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.SetDeadline(time.Now().Add(ioTimeout))
	b.(*net.TCPConn).CloseWrite() // the backend's FIN comes first on the back leg
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Fatalf("client read %q, %v; want EOF", got, err)
	}
	c.Write(make([]byte, size))
	c.CloseWrite() // now the proxy would reset the back leg, but bytes are unacknowledged
	// Read only once the proxy gave up waiting and sent its FIN (LAST-ACK:
	// the backend's came first); read earlier, the bytes would be
	// acknowledged in time and the safe reset would go instead.
	proxySide := netip.MustParseAddrPort(b.RemoteAddr().String())
	backendSide := netip.MustParseAddrPort(b.LocalAddr().String())
	for deadline := time.Now().Add(ioTimeout); ; time.Sleep(time.Millisecond) {
		s, ok, err := sockdiag.Find(proxySide, backendSide)
		if err != nil || !ok {
			t.Fatalf("the proxy's back-leg socket: found %v, %v; want it waiting in LAST-ACK", ok, err)
		}
		if s.State == sockdiag.LastAck {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy's back-leg socket is in %v after %v; want LAST-ACK (the FIN after DrainTimeout)", s.State, ioTimeout)
		}
	}
	n, err := io.Copy(io.Discard, b)
	if err != nil || n != size {
		t.Fatalf("backend read %d bytes, %v; want %d, then EOF (the fallback FIN)", n, err, size)
	}
	waitSessions(t, s, 0)
}
