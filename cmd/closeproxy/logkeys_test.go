package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/logcheck"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// logKeysConfig has a listener for each way a session ends that a test can
// bring about on loopback, and a backend nobody answers.
const logKeysConfig = `shutdown_timeout = "300ms"
[log]
level = "debug"
[admin]
listen = %q
[[listener]]
name = "web"
listen = "127.0.0.1:%d"
backend = "app"
idle_timeout = "200ms"
[[listener]]
name = "pp"
listen = "127.0.0.1:%d"
backend = "app"
proxy_protocol = "required"
proxy_protocol_trusted = ["127.0.0.1"]
proxy_protocol_timeout = "200ms"
[[listener]]
name = "one"
listen = "127.0.0.1:%d"
backend = "app"
max_connections = 1
[[listener]]
name = "down"
listen = "127.0.0.1:%d"
backend = "gone"
[[listener]]
name = "rst"
listen = "127.0.0.1:%d"
backend = "rst"
[[listener]]
name = "h1"
listen = "127.0.0.1:%d"
backend = "h1"
[[backend]]
name = "app"
address = %q
  [backend.pool]
  warm = %d
[[backend]]
name = "gone"
address = "127.0.0.1:%d"
connect_timeout = "200ms"
[backend.pool]
warm = 1
[[backend]]
name = "rst"
address = %q
[backend.pool]
warm = 0
[[backend]]
name = "h1"
address = %q
protocol = "http1"
`

// resetBackend resets each connection once it has read a byte.
func resetBackend(t testing.TB) string {
	t.Helper()
	return loopback.Serve(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1))
		c.SetLinger(0)
		c.Close()
	})
}

// exchange dials addr, writes msg (if any) and reads until the proxy ends
// the connection, with a deadline; what it read and how it ended do not
// matter here, only that the session ended.
func exchange(t testing.TB, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return // refused at once (over_limit) before connect returned: the record is written all the same
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if msg != "" {
		io.WriteString(c, msg)
	}
	if _, err := io.Copy(io.Discard, c); os.IsTimeout(err) {
		t.Errorf("%s: the proxy did not end the session within 5s", addr)
	}
}

// refusingPort is a loopback port that refuses connections for the whole
// test: a socket bound to it and not listening holds it, so that no
// listener the test starts later (the admin's, on port 0) is given it, as
// one was a port freePort closed (the "gone" backend then answered).
func refusingPort(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(sa.(*syscall.SockaddrInet4).Port)
}

// Every line the daemon writes — start, sessions of each outcome, pool
// dials and failures, reloads applied and refused, shutdown — carries each
// key once: JSON log pipelines reject or overwrite a duplicate key.
func TestEveryLogLineHasEachKeyOnce(t *testing.T) {
	echo, rst := loopback.Serve(t, loopback.Echo), resetBackend(t)
	ports := []uint16{freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)}
	gone := refusingPort(t)
	text := func(admin string, warm int) string {
		return fmt.Sprintf(logKeysConfig, admin, ports[0], ports[1], ports[2], ports[3], ports[4], ports[5],
			echo, warm, gone, rst, echo)
	}
	d := startDaemon(t, func(p uint16) string { ports[0] = p; return text("127.0.0.1:0", 1) })
	at := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }

	d.session(t, "hello")                  // ok
	exchange(t, at(0), "")                 // timeout: idle_timeout cuts a silent client
	exchange(t, at(1), "not a header\r\n") // bad_proxy_header
	held, err := net.Dial("tcp", at(2))    // holds "one"'s only slot until shutdown: drained
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	io.WriteString(held, "x")
	if _, err := io.ReadFull(held, make([]byte, 1)); err != nil {
		t.Fatalf("held session: %v", err)
	}
	exchange(t, at(2), "")                                                                                     // over_limit
	exchange(t, at(3), "x")                                                                                    // dial_failed
	exchange(t, at(4), "x")                                                                                    // backend_reset
	exchange(t, at(5), "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") // bad_request

	reloaded := func(l []logLine) []logLine { return withMsg(l, "configuration reloaded") }
	refused := func(l []logLine) []logLine { return withMsg(l, "reload refused; the running configuration stays") }
	write := func(s string) {
		if err := os.WriteFile(d.path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		d.hup <- os.Interrupt
	}
	write(text("127.0.0.1:1", 2)) // new pools for app; admin.listen needs a restart
	waitLines(t, "reload confirmation", d.stderr.String, reloaded, 1)
	write(strings.Replace(text("127.0.0.1:1", 2), `level = "debug"`, `level = "loud"`, 1))
	waitLines(t, "reload refusal", d.stderr.String, refused, 1)
	d.stop() // the held session is drained

	lines := strings.Split(strings.TrimSpace(d.stderr.String()), "\n")
	msgs, outcomes := map[string]bool{}, map[string]bool{}
	for _, line := range lines {
		dup, err := logcheck.DuplicateKey([]byte(line))
		if err != nil || dup != "" {
			t.Errorf("key %q twice (%v) in %s", dup, err, line)
		}
	}
	for _, l := range jsonLines(t, d.stderr.String()) {
		msgs[l.str("msg")] = true
		if l.str("msg") == "teardown" {
			outcomes[l.str("outcome")] = true
		}
	}
	// The test is only as good as the lines it saw.
	for _, want := range []string{"listening", "configuration reloaded", "reload: admin.listen changed; it takes effect after a restart",
		"reload refused; the running configuration stays", "shutting down", "shutdown_timeout ran out: the sessions left are cut", "stopped", "teardown"} {
		if !msgs[want] {
			t.Errorf("no %q line among %v", want, slices.Sorted(maps.Keys(msgs)))
		}
	}
	for _, want := range []string{"ok", "timeout", "bad_proxy_header", "over_limit", "dial_failed", "bad_request", "drained"} {
		if !outcomes[want] {
			t.Errorf("no record with outcome %q; outcomes seen: %v", want, outcomes)
		}
	}
	if t.Failed() {
		t.Logf("the daemon's output:\n%s", d.stderr)
	}
}
