package sockdiag

import (
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
)

// A connection the test closes itself, client first, must show up in
// TIME-WAIT on the client's port and nowhere else.
func TestListFindsOwnTimeWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux-only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	c.Close()              // client's FIN first
	io.Copy(io.Discard, s) // server reads EOF
	s.Close()              // server's FIN second: the client enters TIME-WAIT
	socks, err := List(TimeWait)
	if err != nil {
		t.Fatal(err)
	}
	// The whole 4-tuple: the client's port may also be in an older
	// TIME-WAIT toward another peer, left by other tests on this host.
	srvPort := ln.Addr().(*net.TCPAddr).AddrPort()
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	client, server := c.LocalAddr().(*net.TCPAddr).AddrPort(), ln.Addr().(*net.TCPAddr).AddrPort()
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
	unused := netip.AddrPortFrom(client.Addr(), 1)
	want(server, unused, 0, false) // only the listener has this local address

	c.Close()              // client's FIN first
	io.Copy(io.Discard, s) // server reads EOF
	s.Close()              // server's FIN second: the client enters TIME-WAIT
	want(client, server, TimeWait, true)
	if got, ok, _ := Find(server, client); ok && got.State != LastAck {
		t.Errorf("server's end after the close: %v, want gone or LAST-ACK", got.State)
	}
}
