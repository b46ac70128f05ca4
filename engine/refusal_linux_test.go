package engine

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/policy"
)

// A backend that answers and closes its socket (not only its sending
// side), and a client that, after the answer and its end, sends more
// and waits: the proxy passes the bytes on, the backend's kernel answers
// them with an RST, and nothing reads the back leg any more. The proxy
// looks for that refusal (a quarter of drain_timeout apart): the client
// learns of its bytes' loss by a reset within drain_timeout or so, not
// at its own leg's half_close_timeout, and the record says the backend
// reset.
func TestBackendRefusalAfterItsFINReachesTheClient(t *testing.T) {
	front := policyClose(policy.TargetProxy, policy.FallbackFIN)
	front.HalfCloseTimeout = 20 * time.Second
	back := policyClose(policy.TargetPeer, policy.FallbackReset)
	back.DrainTimeout = 400 * time.Millisecond
	r := relay(t, front, back, time.Minute)
	passRequest(t, r, 64, 5, false)
	answer, sum := payload(10<<10, 6)
	recv(t, writeAsync(r.backend, answer, false), time.Second, "answer")
	r.backend.Close() // closed, not half-closed: what comes later is refused
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(answer))
	if _, err := io.ReadFull(r.client, buf); err != nil || [32]byte(sha256Of(buf)) != sum {
		t.Fatalf("answer: %v", err)
	}
	if n, err := r.client.Read(buf[:1]); n != 0 || err != io.EOF {
		t.Fatalf("after the answer: %d bytes, %v; want EOF", n, err)
	}
	start := time.Now()
	if _, err := r.client.Write(make([]byte, 1000)); err != nil {
		t.Fatalf("late bytes: %v", err)
	}
	// Reading after EOF says EOF again, and another write would find the
	// refusal itself: the client's socket error tells the reset.
	var err error
	for time.Since(start) < 10*time.Second {
		if err = soError(t, r.client); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond) // polls the kernel: no event tells a test of a reset
	}
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("the client's writes after the refusal: %v after %v; want a reset", err, took)
	}
	if took > 2*back.DrainTimeout+time.Second {
		t.Errorf("the client learned of the refusal after %v; want within about drain_timeout (%v), not half_close_timeout (%v)", took, back.DrainTimeout, front.HalfCloseTimeout)
	}
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeBackendReset || td.Back.Close != policy.ClosePeerReset {
		t.Errorf("record %s (%v), back close %s; want backend_reset, peer_reset", td.Outcome, td.Err, td.Back.Close)
	}
}

// soError reads and clears c's pending socket error (SO_ERROR).
func soError(t *testing.T, c syscall.Conn) error {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var e int
	if cerr := rc.Control(func(fd uintptr) { e, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if e != 0 {
		return syscall.Errno(e)
	}
	return nil
}

// A client that takes part of a long answer and resets (closes with
// bytes unread): the record's bytes_out leaves out what the proxy's send
// queue still held unacknowledged, which the client's reset discarded,
// so it is no more than what the client's kernel got.
func TestPeerResetLeavesDiscardedBytesOutOfBytesOut(t *testing.T) {
	r := relayTuned(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), time.Minute,
		func(proxyFront, _ *net.TCPConn) { _ = proxyFront.SetWriteBuffer(4 << 20) })
	_ = r.client.SetReadBuffer(64 << 10)
	passRequest(t, r, 64, 7, false)
	answer, _ := payload(8<<20, 8)
	go func() { _, _ = r.backend.Write(answer) }()
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadFull(r.client, make([]byte, 100<<10))
	if err != nil {
		t.Fatal(err)
	}
	// The proxy's queue fills behind the client's shut window: the
	// load's shape, and the figure compared below is the kernel's.
	time.Sleep(200 * time.Millisecond)
	inq, err := unread(r.client)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.client.SetLinger(0)
	r.client.Close()
	td := r.wait(t, 5*time.Second)
	kernel := int64(got + inq)
	if td.Front.BytesOut > kernel {
		t.Errorf("record: front bytes_out %d, but the client's kernel got %d (%d read, %d unread): the reset's discarded bytes counted as sent", td.Front.BytesOut, kernel, got, inq)
	}
	if td.Outcome != OutcomeClientReset {
		t.Errorf("record %s (%v), want client_reset", td.Outcome, td.Err)
	}
}

// unread is what waits in c's receive queue (SIOCINQ).
func unread(c *net.TCPConn) (q int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	if cerr := rc.Control(func(fd uintptr) { q, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); cerr != nil {
		return 0, cerr
	}
	return q, err
}
