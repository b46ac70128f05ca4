package engine

import (
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// half_close_timeout counts the peer's silence after the proxy's FIN has
// gone: while the FIN waits behind bytes the peer has not acknowledged,
// the half-close has not begun (rule 2: a paused or slow reader is the
// proxy's backpressure, not silence). A client that never reads again
// (its window shut) after the proxy passed on the answer and its FIN is
// therefore cut by idle_timeout, with most of the answer unacknowledged:
// the record says cut, as for any stream cut before its end, and the
// client, reading late, gets part of it and the RST. A client that read
// all of it and the FIN, and still does not close, is reset at
// half_close_timeout with nothing cut.
func TestHalfCloseTimeoutWithBytesUnackedIsACut(t *testing.T) {
	t.Run("unread", func(t *testing.T) { halfCloseTimeoutCut(t, false) })
	t.Run("all_read", func(t *testing.T) { halfCloseTimeoutCut(t, true) })
}

func halfCloseTimeoutCut(t *testing.T, readFirst bool) {
	front := policyClose(policy.TargetProxy, policy.FallbackFIN)
	front.HalfCloseTimeout = 300 * time.Millisecond
	idle := 10 * time.Second
	if !readFirst {
		idle = 1200 * time.Millisecond
	}
	r := relayTuned(t, front, policyClose(policy.TargetPeer, policy.FallbackReset), idle,
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
	start := time.Now()
	td := r.wait(t, 5*time.Second)
	f := td.Front
	if td.Outcome != OutcomeTimeout || f.Close != policy.CloseReset || f.FINOut < 0 || f.Cut == readFirst {
		t.Errorf("record %s (%v), front close %s cut %v, FIN out %v; want timeout, reset, cut %v, after the proxy's FIN",
			td.Outcome, td.Err, f.Close, f.Cut, f.FINOut, !readFirst)
	}
	if readFirst {
		return
	}
	if took := time.Since(start); took < idle-tick(idle) {
		t.Errorf("the client that took nothing was cut %v after the proxy's FIN was queued, want idle_timeout (%v): half_close_timeout ran before its FIN went", took, idle)
	}
	if s := readAll(r.client); !isReset(s.err) || s.n >= int64(len(answer)) || s.sum == sum {
		t.Errorf("client read %d of %d bytes, then %v; want part of them, then ECONNRESET", s.n, len(answer), s.err)
	}
}

// A client reading the answer slowly, or pausing for several
// half_close_timeouts, while the proxy's FIN waits behind the rest of it
// in the send queue: it is not silent, for the FIN has not gone. It
// gets every byte and the FIN, and its own FIN ends the session ok. The
// half-close counts from when the FIN went, not from when it was queued:
// a client that paused for most of the timeout, then read all and closes
// well within the timeout of that (linger) is not reset.
func TestHalfCloseTimeoutWaitsForAReaderBehindTheFIN(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pause     time.Duration // before reading at all
		every     time.Duration // between reads of 16 KiB
		halfClose time.Duration
		linger    time.Duration // after the last byte, before the client's FIN
	}{
		{"trickle", 0, 15 * time.Millisecond, 300 * time.Millisecond, 0},
		{"pause", 1200 * time.Millisecond, 0, 300 * time.Millisecond, 0},
		{"pause_then_linger", 800 * time.Millisecond, 0, time.Second, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front := policyClose(policy.TargetProxy, policy.FallbackFIN)
			front.HalfCloseTimeout = tc.halfClose
			r := relayTuned(t, front, policyClose(policy.TargetPeer, policy.FallbackReset), 10*time.Second,
				func(proxyFront, _ *net.TCPConn) { _ = proxyFront.SetWriteBuffer(4 << 20) })
			_ = r.client.SetReadBuffer(64 << 10)
			passRequest(t, r, 64, 3, false)
			answer, sum := payload(1<<20, 4)
			written := writeAsync(r.backend, answer, true)
			recv(t, written, 5*time.Second, "answer and FIN")
			// The load's shape, not a wait for an event: the reader's pace.
			time.Sleep(tc.pause)
			h, buf, n := sha256.New(), make([]byte, 16<<10), 0
			_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			var err error
			for {
				var k int
				k, err = r.client.Read(buf)
				h.Write(buf[:k])
				n += k
				if err != nil {
					break
				}
				time.Sleep(tc.every)
			}
			if err != io.EOF || n != len(answer) || [32]byte(h.Sum(nil)) != sum {
				t.Fatalf("client read %d of %d bytes, then %v; want all (SHA-256), then EOF", n, len(answer), err)
			}
			time.Sleep(tc.linger) // the client's pace again
			_ = r.client.Close()
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeOK || td.Front.Cut || td.Front.Close == policy.CloseReset {
				t.Errorf("record %s (%v), front close %s reason %s cut %v; want ok, the client's FIN, nothing cut",
					td.Outcome, td.Err, td.Front.Close, td.Front.Reason, td.Front.Cut)
			}
		})
	}
}
