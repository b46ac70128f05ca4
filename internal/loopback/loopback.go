// Package loopback gives tests real TCP sockets on 127.0.0.1, closed when
// the test ends, TIME-WAIT sockets left on purpose, and a count of the
// process's pipe descriptors. It exists so that the tests of several
// packages share one copy of these helpers; nothing outside tests imports
// it.
package loopback

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
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

// Serve accepts on 127.0.0.1 until t ends and runs serve for each
// connection, each in its own goroutine; the cleanup waits for them. It
// returns the address to dial.
func Serve(t testing.TB, serve func(c *net.TCPConn)) string {
	t.Helper()
	return ServeOn(t, Listener(t), serve)
}

// ServeOn is Serve on a listener of the caller's (on [::1], say), which
// it closes when t ends.
func ServeOn(t testing.TB, ln *net.TCPListener, serve func(c *net.TCPConn)) string {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
	return ln.Addr().String()
}

// Echo is a backend for Serve: it sends back what it reads, then a FIN.
func Echo(c *net.TCPConn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// KeepAliveGet sends one GET for path on a new connection to addr, reads
// the whole response and returns the connection open and idle (closed
// when t ends), with the reader that holds what follows. A response that
// closes the connection fails t.
func KeepAliveGet(t testing.TB, addr, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatalf("GET %s: the response closes the connection", path)
	}
	return c, br
}

// EchoThrough sends msg to addr (a proxy in front of Echo), half-closes,
// and fails t unless it reads msg back, then EOF.
func EchoThrough(t testing.TB, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
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

// TimeWait leaves one TIME-WAIT socket: it dials ln at addr (ln's own
// address when ""), and the server (the accepted side, local port = ln's)
// closes first when serverFirst, else the dialer. It returns the 4-tuple
// of the side that holds the TIME-WAIT, addresses unmapped, once that
// side is in TIME-WAIT (closeInOrder).
func TimeWait(t testing.TB, ln net.Listener, addr string, serverFirst bool) (local, peer netip.AddrPort) {
	t.Helper()
	if addr == "" {
		addr = ln.Addr().String()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	first, second := c, s
	if serverFirst {
		first, second = s, c
	}
	local, peer = AddrPort(first.LocalAddr()), AddrPort(first.RemoteAddr())
	if err := closeInOrder(first, second); err != nil {
		t.Fatal(err)
	}
	return local, peer
}

// closeInOrder closes first, then second once first's FIN reached it, and
// returns once second's FIN reached first: the kernel handled it, so first
// holds TIME-WAIT (the FIN that makes it is handled before the reader of
// the socket can see EOF). first keeps its descriptor until then, half
// closed, so that its EOF is that signal.
func closeInOrder(first, second net.Conn) error {
	defer first.Close()
	if err := first.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, second); err != nil { // EOF: first's FIN arrived
		second.Close()
		return err
	}
	if err := second.Close(); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, first) // EOF: second's FIN was handled
	return err
}

// AddrPort is a TCP address as the kernel's socket tables name it: an
// IPv4 address unmapped from IPv6; the zero value for any other address.
func AddrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// PipeFDs counts this process's descriptors that are pipes (Linux: read
// from /proc/self/fd).
func PipeFDs(t testing.TB) int { return countFDs(t, "pipe:") }

// OpenFDs counts this process's open descriptors (Linux: read from
// /proc/self/fd).
func OpenFDs(t testing.TB) int { return countFDs(t, "") }

func countFDs(t testing.TB, prefix string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, prefix) {
			n++
		}
	}
	return n
}
