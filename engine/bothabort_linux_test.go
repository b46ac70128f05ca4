package engine

import (
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// Both peers write more than the other reads (neither reads at all), then
// both abort with an RST: the session ends at once with a record of two
// resets. On the loops one in about ten hung with no record and its
// descriptor held (no timer armed: the back leg's reset waited for the
// end of the direction from it, which ended as late data), and a
// backend that closed with bytes unread after the client's reset was
// recorded as a FIN exchange with TIME-WAIT on the proxy.
func TestBothPeersAbortAfterBulkWrites(t *testing.T) {
	for i := range 20 {
		r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 3*time.Second)
		up, _ := payload(200000, byte(i))
		down, _ := payload(120000, byte(i+1))
		cw := writeAsync(r.client, up, false)
		bw := writeAsync(r.backend, down, false)
		time.Sleep(10 * time.Millisecond) // the script's pause: the shape under test
		r.client.SetLinger(0)
		r.backend.SetLinger(0)
		r.client.Close()
		r.backend.Close()
		<-cw
		<-bw
		td := r.wait(t, 6*time.Second)
		if td.Outcome != OutcomeClientReset && td.Outcome != OutcomeBackendReset {
			t.Errorf("run %d: outcome %s (%v), want a peer's reset", i, td.Outcome, td.Err)
		}
		for _, l := range []*LegRecord{&td.Front, &td.Back} {
			if l.Close != policy.ClosePeerReset && l.Close != policy.CloseReset || l.TimeWait != policy.SideNone || l.FINOut >= 0 {
				t.Errorf("run %d: %s close %s time_wait %s fin_out %v; want a reset, no TIME-WAIT, no FIN", i, l.leg, l.Close, l.TimeWait, l.FINOut)
			}
		}
	}
}
