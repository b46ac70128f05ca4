package engine

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A client resets mid-upload while both directions stall (it reads
// nothing; the backend reads nothing yet). The copier writing to the
// client meets the reset first: its write takes the socket's error, and
// it is held (writeFailedHook) before it reports. The backend then reads:
// the copier of the upload reads the bytes still queued and then EOF,
// the reset's error being gone. The backend must see the aborted upload
// end with a reset, not a FIN, and the record say the client reset and
// the back leg was cut. (The loops report a failed write before the
// other flow reads: only the goroutine copiers race so.)
func TestClientResetTakenByAWriteIsNoFIN(t *testing.T) {
	if onLoops {
		t.Skip("the relay loops report a write's error before the other flow reads")
	}
	up, _ := payload(512<<10, 5)
	down, _ := payload(1<<20, 6)
	ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
	var proxyFront, proxyBack *net.TCPConn
	r := startTuned(t, loopback.Listener(t), loopback.Listener(t), ends, ends, 10*time.Second,
		func(front, back *net.TCPConn) {
			proxyFront, proxyBack = front, back
			_ = front.SetWriteBuffer(4 << 10) // the download stalls toward the client
			_ = back.SetWriteBuffer(4 << 10)  // and the upload toward the backend
		})
	t.Cleanup(func() { r.client.Close(); r.backend.Close() })
	_ = r.client.SetReadBuffer(4 << 10)
	_ = r.backend.SetReadBuffer(64 << 10)
	failed, release := make(chan struct{}), make(chan struct{})
	writeFailedHook = func() { close(failed); <-release }
	t.Cleanup(func() { writeFailedHook = nil })

	writeAsync(r.backend, down, false)
	writeAsync(r.client, up, false)
	// Both copiers are stuck writing once bytes wait unsent on both of the
	// proxy's sockets and unread upload bytes wait on its front: only
	// the kernel's queues tell.
	stalled := func() bool {
		inFront, err1 := recvQueue(proxyFront)
		outFront, err2 := sendQueue(proxyFront)
		outBack, err3 := sendQueue(proxyBack)
		return err1 == nil && err2 == nil && err3 == nil && inFront > 0 && outFront > 0 && outBack > 0
	}
	for deadline := time.Now().Add(5 * time.Second); !stalled(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay never stalled both ways")
		}
	}
	_ = r.client.SetLinger(0)
	_ = r.client.Close()
	recv(t, failed, 5*time.Second, "the write to the client fails")

	n, err := io.Copy(io.Discard, r.backend)
	if err == nil {
		t.Errorf("the backend saw the aborted upload end with a FIN after %d of %d bytes", n, len(up))
	}
	close(release)
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || !td.Back.Cut {
		t.Errorf("record %s (%v), front close %s, back cut %v; want client_reset, peer_reset, cut",
			td.Outcome, td.Err, td.Front.Close, td.Back.Cut)
	}
}
