package engine

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// stalledBothWays starts a relay whose two directions both stall: the
// download toward a client that reads nothing yet, the upload toward a
// backend that reads nothing yet. down, when not nil, is what the
// backend sends; closeWrite: then its FIN, before the upload begins.
// The copier whose write fails first is held (writeFailedHook) until
// release is called; failed is closed once it is held. unstall lets the
// download flow at loopback speed again (a 4 KiB send buffer waits for
// the client's delayed ACKs).
func stalledBothWays(t *testing.T, down []byte, closeWrite bool) (r *relayed, failed chan struct{}, release, unstall func()) {
	t.Helper()
	if onLoops {
		t.Skip("the relay loops report a write's error before the other flow reads")
	}
	up, _ := payload(512<<10, 5)
	ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
	var proxyFront, proxyBack *net.TCPConn
	r = startTuned(t, loopback.Listener(t), loopback.Listener(t), ends, ends, 10*time.Second,
		func(front, back *net.TCPConn) {
			proxyFront, proxyBack = front, back
			_ = front.SetWriteBuffer(4 << 10) // the download stalls toward the client
			_ = back.SetWriteBuffer(4 << 10)  // and the upload toward the backend
			_ = back.SetReadBuffer(4 << 20)   // the answer (and FIN) wait unread in the proxy
		})
	t.Cleanup(func() { r.client.Close(); r.backend.Close() })
	_ = r.backend.SetWriteBuffer(4 << 20)
	failed, held := make(chan struct{}), make(chan struct{})
	writeFailedHook = func() { close(failed); <-held }
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(func() { release(); writeFailedHook = nil })

	if err := recv(t, writeAsync(r.backend, down, closeWrite), 5*time.Second, "the backend's answer"); closeWrite && err != nil {
		t.Fatalf("the backend's answer and FIN: %v", err)
	}
	writeAsync(r.client, up, false)
	// Both copiers are stuck writing once bytes wait unsent on both of the
	// proxy's sockets and unread bytes wait on both: only the kernel's
	// queues tell. With closeWrite, the backend's FIN must wait there
	// too, unread (CLOSE-WAIT).
	var info infoReader
	stalled := func() bool {
		inFront, err1 := recvQueue(proxyFront)
		outFront, err2 := sendQueue(proxyFront)
		inBack, err3 := recvQueue(proxyBack)
		outBack, err4 := sendQueue(proxyBack)
		finIn := !closeWrite || info.read(proxyBack).state == stateCloseWait
		return err1 == nil && err2 == nil && err3 == nil && err4 == nil &&
			inFront > 0 && outFront > 0 && inBack > 0 && outBack > 0 && finIn
	}
	for deadline := time.Now().Add(5 * time.Second); !stalled(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay never stalled both ways")
		}
	}
	unstall = func() {
		_ = proxyFront.SetWriteBuffer(1 << 20)
	}
	return r, failed, release, unstall
}

// resetNow resets c: an RST, whatever it had queued.
func resetNow(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// One peer resets while both directions stall. The copier writing to
// that peer meets the reset first: its write takes the socket's error,
// and it is held before it reports. The other peer then reads: the
// copier from the reset peer reads the bytes still queued and then EOF,
// the reset's error being gone. The other peer must see the stream end
// with a reset, not a FIN that makes what it got look whole (an aborted
// upload, an answer the backend never ended in order), and the record
// say that peer reset and the other leg was cut. (The loops report a
// failed write before the other flow reads: only the goroutine copiers
// race so.)
func TestResetTakenByAWriteIsNoFIN(t *testing.T) {
	for _, reset := range []policy.Leg{policy.Front, policy.Back} {
		t.Run(string(reset.Peer()), func(t *testing.T) {
			down, _ := payload(1<<20, 6)
			r, failed, release, unstall := stalledBothWays(t, down, false)
			resetPeer, reader, outcome := r.client, r.backend, OutcomeClientReset
			if reset == policy.Back {
				resetPeer, reader, outcome = r.backend, r.client, OutcomeBackendReset
			}
			resetNow(resetPeer)
			recv(t, failed, 5*time.Second, "the write to the reset peer fails")

			unstall()
			got := recv(t, readAllAsync(reader), 5*time.Second, "the other peer reads")
			if got.err == nil {
				t.Errorf("the other peer saw the stream end with a FIN after %d bytes, not with the reset", got.n)
			}
			release()
			td := r.wait(t, 5*time.Second)
			resetLeg, cutLeg := td.Front, td.Back
			if reset == policy.Back {
				resetLeg, cutLeg = td.Back, td.Front
			}
			if td.Outcome != outcome || resetLeg.Close != policy.ClosePeerReset || !cutLeg.Cut {
				t.Errorf("record %s (%v), reset leg's close %s, other leg cut %v; want %s, peer_reset, cut",
					td.Outcome, td.Err, resetLeg.Close, cutLeg.Cut, outcome)
			}
		})
	}
}

// A backend that answers whole, sends its FIN and then resets (it closed
// with the rest of the request unread) reads the same way once the write
// of the upload took the reset: but its FIN came, and the client must get
// the whole answer and that FIN, not a reset that cuts what is queued
// toward it.
func TestBackendFINThenResetKeepsTheAnswer(t *testing.T) {
	down, sum := payload(1<<20, 6)
	r, failed, release, unstall := stalledBothWays(t, down, true)
	resetNow(r.backend)
	recv(t, failed, 5*time.Second, "the write to the backend fails")

	unstall()
	got := recv(t, readAllAsync(r.client), 5*time.Second, "the client reads the answer")
	if got.err != nil || got.n != int64(len(down)) || got.sum != sum {
		t.Errorf("the client read %d of %d bytes (intact %v), then %v; want the whole answer and a FIN",
			got.n, len(down), got.sum == sum, got.err)
	}
	release()
	r.wait(t, 5*time.Second)
}
