package engine

import (
	"io"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// A client closes first while the backend may still answer: the proxy's
// FIN to the client waits (here for the backend's grace), and the ACK of
// the client's FIN must not wait with it for the kernel's delayed ACK,
// which could arrive after the proxy's FIN and end the client's TIME-WAIT
// (see ackNow). It goes on the front leg after ackDelay, and the client's
// socket moves on to FIN-WAIT-2 long before the proxy's FIN.
func TestPeerFINAcknowledgedWhileTheProxysFINWaits(t *testing.T) {
	acked := make(chan policy.Leg, 4)
	orig := ackFIN
	ackFIN = func(l *leg) { acked <- l.name; orig(l) }
	t.Cleanup(func() { ackFIN = orig }) // after the relay's own cleanup: no session reads it then

	back := policyClose(policy.TargetPeer, policy.FallbackReset) // withholds its FIN for a grace of 300 ms
	r := relay(t, defFront, back, 5*time.Second)
	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	recv(t, writeAsync(r.backend, []byte("ans"), false), time.Second, "answer")
	if _, err := io.ReadFull(r.client, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	if err := r.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if leg := recv(t, acked, 5*time.Second, "the ACK of the client's FIN"); leg != policy.Front {
		t.Fatalf("ACK sent at once on the %s leg, want front", leg)
	}
	var info infoReader
	for s := info.read(r.client); s.state != stateFinWait2; s = info.read(r.client) {
		if s.state != stateFinWait1 {
			t.Fatalf("client's socket in state %d, want FIN-WAIT-1, then 2: the proxy's FIN came first", s.state)
		}
		if time.Since(closed) > 5*time.Second {
			t.Fatal("client's FIN not acknowledged after 5s")
		}
		time.Sleep(time.Millisecond) // the ACK crosses loopback; nothing signals its arrival
	}
	if got := recv(t, readAllAsync(r.client), 5*time.Second, "client's EOF"); got.err != nil {
		t.Errorf("client's read after the backend's grace: %v, want EOF", got.err)
	}
	td := r.wait(t, 5*time.Second)
	if td.Front.TimeWait != policy.SideClient {
		t.Errorf("front time_wait %s, want client (its FIN first)", td.Front.TimeWait)
	}
	select {
	case leg := <-acked:
		t.Errorf("a second ACK at once, on the %s leg", leg)
	default:
	}
}
