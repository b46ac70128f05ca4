// Package loopback gives tests real TCP sockets on 127.0.0.1, closed when
// the test ends, and a count of the process's pipe descriptors. It exists
// so that the engine's and the proxy's tests share one copy of these
// helpers; nothing outside tests imports it.
package loopback

import (
	"net"
	"os"
	"strings"
	"testing"
)

// Listener listens on 127.0.0.1 on a port the kernel picks and closes the
// listener when t ends.
func Listener(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Pair connects to ln and returns both ends, closed when t ends at the
// latest.
func Pair(t testing.TB, ln *net.TCPListener) (client, server *net.TCPConn) {
	t.Helper()
	client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// PipeFDs counts this process's descriptors that are pipes (Linux: read
// from /proc/self/fd).
func PipeFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}
