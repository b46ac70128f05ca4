package sockdiag

import (
	"io"
	"net"
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
