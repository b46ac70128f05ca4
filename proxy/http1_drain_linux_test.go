package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// Shutdown while a client is midway through a request's head: draining
// does not end the read (a request has begun, and is answered if it
// completes in time), shutdown running out of time does. The client is
// reset, the record says drained and cut, and the shutdown took its
// timeout, not the minute of idle_timeout.
func TestHTTP1ShutdownCutsAHalfHead(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	h := startProxy(t, config.Listener{IdleTimeout: time.Minute, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Draining ends a wait for a request not begun: the head must be in
	// the proxy's hands before it starts.
	waitRead(t, c.LocalAddr().String(), h.addr)

	const timeout = 300 * time.Millisecond
	start := time.Now()
	if err := shutdownWithin(h, timeout); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < timeout || el > 10*time.Second {
		t.Errorf("shutdown took %v, want its timeout %v plus a little", el, timeout)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client: %v, want a reset: its request was cut", err)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDrained || !td.Front.Cut {
		t.Errorf("outcome %s, front cut %v; want drained, cut", td.Outcome, td.Front.Cut)
	}
}

// waitRead polls the kernel (nothing else knows) until the proxy's socket
// of the connection from client to proxy holds no unread byte.
func waitRead(t *testing.T, client, proxy string) {
	t.Helper()
	waitProcTCP(t, client, proxy, "the proxy did not read what the client sent", func(f []string) bool {
		return f != nil && strings.HasSuffix(f[4], ":00000000")
	})
}

// waitGone polls the kernel until the proxy's socket of the connection
// from client to proxy left /proc/net/tcp: reset.
func waitGone(t *testing.T, client, proxy string) {
	t.Helper()
	waitProcTCP(t, client, proxy, "the proxy's socket still there after the client's reset", func(f []string) bool { return f == nil })
}

// waitProcTCP polls /proc/net/tcp every millisecond, for 5 s at most,
// until done holds for the fields of the proxy's socket toward client
// (nil: no such socket).
func waitProcTCP(t *testing.T, client, proxy, what string, done func(fields []string) bool) {
	t.Helper()
	local, remote := procAddr(t, proxy), procAddr(t, client)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 4 && f[1] == local && f[2] == remote {
				fields = f
			}
		}
		if done(fields) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s) within 5s", what, client)
		}
	}
}

// procAddr spells an IPv4 loopback address as /proc/net/tcp does.
func procAddr(t *testing.T, addr string) string {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := a.IP.To4()
	if ip == nil {
		t.Fatalf("%s: not IPv4", addr)
	}
	// The kernel prints the address's 32-bit word as the host holds it,
	// and the port as a number.
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip), a.Port)
}

// Draining closes an idle keep-alive connection, but one whose next
// request reached the kernel as draining began (its bytes not read by
// the proxy yet) is not idle: the request is read and answered, with
// Connection: close, on either relay. The hook sends it at that moment
// and waits until the proxy's kernel acknowledged it.
func TestHTTP1DrainAnswersARequestWaitingInTheKernel(t *testing.T) {
	be := answerEach(t, func(path string) []byte { return []byte(path) }, nil)
	h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if status, b, _ := readBody(t, br); status != 200 || string(b) != "/first" {
		t.Fatalf("first request: %d %q", status, b)
	}
	var once sync.Once
	drainIdleHook = func() {
		once.Do(func() { sendInto(t, c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n") })
	}
	t.Cleanup(func() { drainIdleHook = nil })
	h.srv.Drain()
	status, b, closing := readBody(t, br)
	if status != 200 || string(b) != "/second" || !closing {
		t.Fatalf("second request, sent as draining began: %d %q (Connection: close %v); want 200 /second, closing", status, b, closing)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 2 {
		t.Errorf("record: outcome %s (%v), %d requests; want ok, 2", td.Outcome, td.Err, td.BackRequests)
	}
}

// idle_timeout closes an idle keep-alive connection, but one whose next
// request reached the kernel as the wait ran out (its event not handled
// yet) is not idle: the request is read and answered, on either relay,
// where it was left unanswered behind the proxy's FIN (a load balancer
// that reuses the connection then closes its client's, no retry). The
// hook sends the request at that moment and waits until the proxy's
// kernel acknowledged it.
func TestHTTP1IdleTimeoutAnswersARequestWaitingInTheKernel(t *testing.T) {
	be := answerEach(t, func(path string) []byte { return []byte(path) }, nil)
	h := startProxy(t, config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if status, b, _ := readBody(t, br); status != 200 || string(b) != "/first" {
		t.Fatalf("first request: %d %q", status, b)
	}
	var once sync.Once
	hook := func() {
		once.Do(func() { sendInto(t, c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n") })
	}
	idleLookHook.Store(&hook)
	t.Cleanup(func() { idleLookHook.Store(nil) })
	status, b, _ := readBody(t, br)
	if status != 200 || string(b) != "/second" {
		t.Fatalf("second request, sent as idle_timeout ran out: %d %q; want 200 /second", status, b)
	}
	c.Close()
	if td := h.record(t); td.BackRequests != 2 || td.Outcome == engine.OutcomeLateData {
		t.Errorf("record: outcome %s (%v), %d requests; want 2 requests, not late_data", td.Outcome, td.Err, td.BackRequests)
	}
}

// sendInto writes msg on c and returns once the peer's kernel
// acknowledged it: it waits there, unread.
func sendInto(t *testing.T, c *net.TCPConn, msg string) {
	io.WriteString(c, msg)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if q, err := unsent(c); err != nil || q == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Error("the peer's kernel did not acknowledge the request within 5s")
			return
		}
		runtime.Gosched()
	}
}

// unsent is what c sent that its peer's kernel has not acknowledged
// (SIOCOUTQ).
func unsent(c *net.TCPConn) (q int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	if cerr := rc.Control(func(fd uintptr) { q, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); cerr != nil {
		return 0, cerr
	}
	return q, err
}

// drainingWithANewConnection starts a proxy (idle_timeout 30 s), has a
// client connect without sending anything, and drains; on the loops it
// returns once the drain has looked at the session (drainIdleHook), on
// goroutines at once (a read there meets whatever comes, in any order).
func drainingWithANewConnection(t *testing.T) (*harness, *net.TCPConn) {
	o := startOrigin(t, hello)
	h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	c := dialClient(t, h.addr, false)
	for deadline := time.Now().Add(5 * time.Second); h.srv.Live() != 1; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not take the connection within 5s")
		}
	}
	looked := make(chan struct{})
	var once sync.Once
	drainIdleHook = func() { once.Do(func() { close(looked) }) }
	t.Cleanup(func() { drainIdleHook = nil })
	h.srv.Drain()
	if testRelay == "loop" {
		select {
		case <-looked:
		case <-time.After(5 * time.Second):
			t.Fatal("the drain did not look at the new connection within 5s")
		}
	}
	return h, c
}

// A connection accepted before draining began that closes without a
// request ends at its FIN, on either relay: on the loops it waited for a
// first request until idle_timeout (30 s here), holding the drain, as
// the FIN is nothing unread.
func TestHTTP1DrainEndsANewConnectionAtItsFIN(t *testing.T) {
	h, c := drainingWithANewConnection(t)
	c.CloseWrite()
	select {
	case <-h.srv.Drained():
	case <-time.After(5 * time.Second):
		t.Fatalf("a new connection that closed without a request still open 5s after its FIN (%d sessions): the drain waits for it", h.srv.Live())
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 0 {
		t.Errorf("record: outcome %s (%v), %d requests; want ok, none", td.Outcome, td.Err, td.BackRequests)
	}
}

// A connection accepted before draining began, whose first request comes
// after it began (a client slow to send, 100 ms here: the load's shape),
// is not an idle keep-alive connection: it is served, with Connection:
// close, on either relay.
func TestHTTP1DrainServesANewConnectionsFirstRequest(t *testing.T) {
	h, c := drainingWithANewConnection(t)
	time.Sleep(100 * time.Millisecond) // the client's pace: its request comes after the drain began
	io.WriteString(c, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
	status, b, closing := readBody(t, bufio.NewReader(c))
	if status != 200 || string(b) != "GET /late 0" || !closing {
		t.Fatalf("first request after draining began: %d %q (Connection: close %v); want 200, closing", status, b, closing)
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 1 {
		t.Errorf("record: outcome %s (%v), %d requests; want ok, 1", td.Outcome, td.Err, td.BackRequests)
	}
}
