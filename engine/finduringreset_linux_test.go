package engine

import (
	"io"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend whose FIN comes after its grace ran out, while the fallback's
// safe reset waits for it to acknowledge what it was sent (it reads
// slowly): its close decides, as within the grace. The FIN goes second
// (TIME-WAIT on the backend, as its target wants) and the backend reads
// its stream to EOF; it was reset once it had read it, and the record
// said grace_expired beside a FIN that had been in for hundreds of ms
// (http1 uploads answered early, under load).
func TestPeersFINDuringSafeResetWaitEndsByFIN(t *testing.T) {
	backend, server := loopback.Pair(t, loopback.Listener(t))
	// More than the backend's window, all in the proxy's send buffer:
	// what the safe reset waits for it to acknowledge.
	_ = backend.SetReadBuffer(64 << 10)
	_ = server.SetWriteBuffer(2 << 20)
	sent := make([]byte, 512<<10)
	if _, err := server.Write(sent); err != nil {
		t.Fatal(err)
	}
	resetting := entered(t, phaseResetting)
	back := policyClose(policy.TargetPeer, policy.FallbackReset)
	s := &Session{Rec: NewRecorder(1, "web", "app", policy.TargetProxy, back.TimeWait), Front: policyClose(policy.TargetProxy, policy.FallbackFIN), Back: back}
	ended := make(chan struct{})
	go func() { s.End(policy.Back, server, nil, Ending{}); close(ended) }()
	select {
	case <-resetting:
	case <-time.After(5 * time.Second):
		t.Fatal("the grace never ran out into the fallback's safe reset")
	}
	if err := backend.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(backend)
	<-ended
	b := s.Rec.Done().Back
	if err != nil || len(got) != len(sent) {
		t.Errorf("the backend read %d of %d bytes, then %v; want all, then EOF", len(got), len(sent), err)
	}
	if b.Close != policy.CloseFIN || b.FirstFIN != policy.SideBackend || b.TimeWait != policy.SideBackend {
		t.Errorf("back close %s first_fin %s time_wait %s; want fin, backend, backend", b.Close, b.FirstFIN, b.TimeWait)
	}
}
