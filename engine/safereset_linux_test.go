package engine

import (
	"io"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A client that half-closed, read its whole answer and then reset (it
// closed with SO_LINGER 0) before the proxy's safe reset went: the
// kernel closed the proxy's socket at the client's RST, so closing it
// sends nothing. The record says the client reset the leg, not a reset
// of the proxy's that never went out.
func TestSafeResetAfterThePeersResetIsTheirs(t *testing.T) {
	client, server := loopback.Pair(t, loopback.Listener(t))
	answer := []byte("the whole answer")
	if _, err := server.Write(answer); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(answer))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(make([]byte, 1)); err != io.EOF { // the client's FIN
		t.Fatalf("server read %v, want the client's FIN", err)
	}
	_ = client.SetLinger(0)
	client.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !ResetByPeer(server) { // the kernel has the client's RST: no event says so, its state is polled
		if time.Now().After(deadline) {
			t.Fatal("the client's RST never reached the proxy's socket")
		}
		time.Sleep(time.Millisecond)
	}
	pol := policyClose(policy.TargetNowhere, policy.FallbackFIN)
	s := frontSession(pol)
	s.End(policy.Front, server, nil, Ending{})
	rec := s.Rec.Record()
	if f := rec.Front; f.Close != policy.ClosePeerReset || f.RSTOut >= 0 || f.TimeWait != policy.SideNone || f.Cut {
		t.Errorf("front close %s, rst_out %v, time_wait %s, cut %v; want peer_reset, none sent, no TIME-WAIT, not cut (outcome %s)", f.Close, f.RSTOut, f.TimeWait, f.Cut, rec.Outcome)
	}
}
