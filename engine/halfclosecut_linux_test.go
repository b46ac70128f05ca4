package engine

import (
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// A client that stops reading (its window shut) after the proxy passed
// on the whole answer and its FIN, and never closes: half_close_timeout
// resets the front leg with most of the answer still unacknowledged in
// the proxy's send queue. That reset cuts the answer short, and the
// record says so (cut), as for any stream cut before its end: the
// client, reading late, gets part of it and the RST. The FIN that went
// before does not make the stream whole. A client that read all of it
// and the FIN, and still does not close, is reset with nothing cut.
func TestHalfCloseTimeoutWithBytesUnackedIsACut(t *testing.T) {
	t.Run("unread", func(t *testing.T) { halfCloseTimeoutCut(t, false) })
	t.Run("all_read", func(t *testing.T) { halfCloseTimeoutCut(t, true) })
}

func halfCloseTimeoutCut(t *testing.T, readFirst bool) {
	front := policyClose(policy.TargetProxy, policy.FallbackFIN)
	front.HalfCloseTimeout = 300 * time.Millisecond
	r := relayTuned(t, front, policyClose(policy.TargetPeer, policy.FallbackReset), 10*time.Second,
		func(proxyFront, _ *net.TCPConn) { _ = proxyFront.SetWriteBuffer(4 << 20) })
	_ = r.client.SetReadBuffer(64 << 10)
	passRequest(t, r, 64, 1, false)
	answer, sum := payload(1<<20, 2)
	written := writeAsync(r.backend, answer, true)
	_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if readFirst {
		if s := readAll(r.client); s.err != nil || s.sum != sum {
			t.Fatalf("client read %d bytes (%v); want the answer by SHA-256, then EOF", s.n, s.err)
		}
	}
	recv(t, written, 5*time.Second, "answer and FIN")
	td := r.wait(t, 5*time.Second)
	f := td.Front
	if td.Outcome != OutcomeTimeout || f.Close != policy.CloseReset || f.FINOut < 0 || f.Cut == readFirst {
		t.Errorf("record %s (%v), front close %s cut %v, FIN out %v; want timeout, reset, cut %v, after the proxy's FIN",
			td.Outcome, td.Err, f.Close, f.Cut, f.FINOut, !readFirst)
	}
	if readFirst {
		return
	}
	if s := readAll(r.client); !isReset(s.err) || s.n >= int64(len(answer)) || s.sum == sum {
		t.Errorf("client read %d of %d bytes, then %v; want part of them, then ECONNRESET", s.n, len(answer), s.err)
	}
}
