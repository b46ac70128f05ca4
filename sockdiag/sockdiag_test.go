package sockdiag

import (
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// A connection the test closes itself, client first, must show up in
// TIME-WAIT on the client's port and nowhere else.
func TestListFindsOwnTimeWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux-only")
	}
	c, s, local, srvPort := connected(t)
	closeClientFirst(c, s)
	socks, err := List(TimeWait)
	if err != nil {
		t.Fatal(err)
	}
	// The whole 4-tuple: the client's port may also be in an older
	// TIME-WAIT toward another peer, left by other tests on this host.
	if n := Count(socks, func(s Socket) bool { return s.Local == local && s.Peer == srvPort }); n != 1 {
		t.Errorf("TIME-WAIT sockets %s → %s: %d, want 1", local, srvPort, n)
	}
	if n := Count(socks, func(s Socket) bool { return s.Local == srvPort }); n != 0 {
		t.Errorf("TIME-WAIT on the server side %s: %d, want 0", srvPort, n)
	}
}

// Find looks up one socket by its exact 4-tuple, in whatever state, and
// does not mistake the listener on the local port for a connection.
func TestFindOneSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux-only")
	}
	c, s, client, server := connected(t)
	want := func(local, peer netip.AddrPort, state State, found bool) {
		t.Helper()
		got, ok, err := Find(local, peer)
		if err != nil {
			t.Fatal(err)
		}
		if ok != found || (found && (got.State != state || got.Local != local || got.Peer != peer)) {
			t.Errorf("Find(%s, %s) = %+v, %v; want %v, %v", local, peer, got, ok, state, found)
		}
	}
	want(client, server, Established, true)
	want(server, client, Established, true)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; { // loopback: usually within the write
		got, _, err := Find(server, client)
		if err == nil && got.Unread == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server's end after 5 bytes were sent: unread %d, %v; want 5", got.Unread, err)
		}
		time.Sleep(time.Millisecond) // polling a kernel count
	}
	if _, err := io.ReadFull(s, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if got, _, err := Find(server, client); err != nil || got.Unread != 0 {
		t.Errorf("server's end after reading them: unread %d, %v; want 0", got.Unread, err)
	}
	unused := netip.AddrPortFrom(client.Addr(), 1)
	want(server, unused, 0, false) // only the listener has this local address
	closeClientFirst(c, s)
	want(client, server, TimeWait, true)
	if got, ok, _ := Find(server, client); ok && got.State != LastAck {
		t.Errorf("server's end after the close: %v, want gone or LAST-ACK", got.State)
	}
}

// connected returns both ends of a loopback connection and their
// addresses (server: the listener's, which stays open until the test
// ends).
func connected(t *testing.T) (c, s net.Conn, client, server netip.AddrPort) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s = <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s, c.LocalAddr().(*net.TCPAddr).AddrPort(), ln.Addr().(*net.TCPAddr).AddrPort()
}

// closeClientFirst ends the connection with the client's FIN first: the
// client's end enters TIME-WAIT.
func closeClientFirst(c, s net.Conn) {
	c.Close()
	io.Copy(io.Discard, s) // the server reads EOF
	s.Close()
}
