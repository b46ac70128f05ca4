package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// bareAccept dials ln and accepts the connection bare (acceptFD); the
// client is closed at the test's end, the descriptor is the caller's.
func bareAccept(t *testing.T, ln net.Listener) (client net.Conn, fd int, peer netip.AddrPort) {
	t.Helper()
	w, err := bareWaiter(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if fd, peer, err = acceptFD(w); err != nil {
		t.Fatal(err)
	}
	return c, fd, peer
}

// fdConn makes a bare descriptor a working *net.TCPConn (a session the
// loops refuse relays on goroutines) and closes the descriptor.
func TestFDConnKeepsTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, fd, peer := bareAccept(t, ln)
	if peer.String() != c.LocalAddr().String() {
		t.Errorf("peer %s, want %s", peer, c.LocalAddr())
	}
	tc, err := fdConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Close(fd); !errors.Is(err, syscall.EBADF) {
		t.Errorf("the bare descriptor is still open after fdConn (close: %v)", err)
	}
	io.WriteString(c, "over")
	c.(*net.TCPConn).CloseWrite()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "over" {
		t.Errorf("read %q, %v through the connection", got, err)
	}
	tc.Close()
}
