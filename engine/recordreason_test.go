package engine

import (
	"testing"

	"github.com/closeproxy/closeproxy/policy"
)

// A leg whose target was the proxy and whose peer's FIN the kernel saw
// first, though the proxy had decided its own FIN first (no reason
// noted then): the record says peer_first, as the docs give for a leg
// not as wanted for that cause, never an empty reason.
func TestRecordNamesPeerFirstWhenTheKernelSawIt(t *testing.T) {
	l := newLegRecord(policy.Front, policy.TargetProxy)
	l.Target, l.FirstFIN, l.Close = policy.TargetProxy, policy.SideClient, policy.CloseFIN
	l.FINIn, l.FINOut = 522000, 519000
	l.finish()
	if l.AsWanted || l.TimeWait != policy.SideClient || l.Reason != policy.ReasonPeerFirst {
		t.Errorf("as_wanted %v, time_wait %s, reason %q; want false, client, peer_first", l.AsWanted, l.TimeWait, l.Reason)
	}
}
