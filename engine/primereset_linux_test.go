package engine

import (
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// Bytes read before the relay (what a client sent behind its PROXY
// header) go first; a backend that reset before they could be written is
// recorded as the backend's reset, as a copier's write records it, not as
// a failure of the proxy's own (outcome error): 26 of 1,000 sessions
// toward a resetting backend on goroutines in a review, none on the loops.
func TestPendingBytesMeetTheBackendsReset(t *testing.T) {
	if onLoops {
		t.Skip("the goroutines' first write (executor.prime)")
	}
	client, proxyFront := dialPair(loopback.Listener(t))
	proxyBack, backend := dialPair(loopback.Listener(t))
	t.Cleanup(func() { client.Close(); backend.Close(); proxyFront.Close(); proxyBack.Close() })
	_ = backend.SetLinger(0)
	backend.Close() // its RST reaches the proxy's socket before the relay writes
	var info infoReader
	for deadline := time.Now().Add(5 * time.Second); info.read(proxyBack).state != stateClose; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the backend's reset did not reach the proxy's socket within 5s")
		}
	}
	rec := NewRecorder(sessionIDs.Add(1), "web", "app", policy.TargetProxy, policy.TargetPeer)
	s := &Session{Rec: rec, Front: policyClose(policy.TargetProxy, policy.FallbackFIN), Back: policyClose(policy.TargetPeer, policy.FallbackReset),
		Idle: 5 * time.Second, Drain: make(chan struct{}), Kill: make(chan struct{})}
	s.Relay(proxyFront, proxyBack, Pending{Up: []byte("GET / HTTP/1.1\r\n\r\n")})
	if td := rec.Done(); td.Outcome != OutcomeBackendReset || td.Back.Close != policy.ClosePeerReset {
		t.Errorf("record: %s (%v), back close %s; want backend_reset, peer_reset", td.Outcome, td.Err, td.Back.Close)
	}
}
