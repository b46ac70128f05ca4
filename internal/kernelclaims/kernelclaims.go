// Package kernelclaims holds teardown records' TIME-WAIT claims against
// the kernel's sockets, by 4-tuple. It exists so that the engine's tests
// (records of the relay alone) and the proxy's (records of whole
// sessions) judge records by one copy of the rules; it works on plain
// legs, not on engine.Teardown, so that the engine's own tests can import
// it. Nothing outside tests imports it.
package kernelclaims

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// Leg is what a record says of one leg: its session, its name in the
// record (front or back), both ends and where TIME-WAIT landed.
type Leg struct {
	Session     uint64
	Name        string
	Local, Peer netip.AddrPort
	TimeWait    policy.Side
}

// tuple is a socket's local and peer address: a TIME-WAIT socket's
// identity.
type tuple struct{ local, peer netip.AddrPort }

// claims returns the TIME-WAIT sockets a leg says exist (must) and those
// it says do not (mustNot); unknown claims neither, only that one of the
// two exists (checked apart).
func (l Leg) claims() (must, mustNot []tuple) {
	proxy, peer := tuple{l.Local, l.Peer}, tuple{l.Peer, l.Local}
	switch l.TimeWait {
	case policy.SideProxy:
		return []tuple{proxy}, []tuple{peer}
	case policy.SideClient, policy.SideBackend:
		return []tuple{peer}, []tuple{proxy}
	case policy.SideBoth:
		return []tuple{proxy, peer}, nil
	case policy.SideUnknown:
		return nil, nil
	}
	return nil, []tuple{proxy, peer}
}

// Check matches every leg's TIME-WAIT claim to the kernel's TIME-WAIT
// sockets by 4-tuple, and returns how many legs said unknown (each of
// which must still have a TIME-WAIT on one side). Claims the kernel only
// fails to hold are excused, the test skipped, when the kernel destroyed
// at least as many TIME-WAIT sockets since mark, its table (shared with
// every test beside this one) full. Call Settle first.
func Check(t testing.TB, legs []Leg, mark procnet.OverflowMark) (unknown int) {
	t.Helper()
	held := map[tuple]bool{}
	for w, s := range states(t, legs) {
		held[w] = s == sockdiag.TimeWait
	}
	// On loopback a client may dial from a port whose connection left its
	// TIME-WAIT on the proxy: the new SYN takes that TIME-WAIT over. Only
	// the latest session naming a 4-tuple is judged.
	latest := map[tuple]uint64{}
	for _, l := range legs {
		latest[tuple{l.Local, l.Peer}] = max(latest[tuple{l.Local, l.Peer}], l.Session)
	}
	var missing, wrong []string // claims the kernel lacks; TIME-WAIT the kernel holds unclaimed
	for _, l := range legs {
		if latest[tuple{l.Local, l.Peer}] != l.Session {
			continue
		}
		if l.TimeWait == policy.SideUnknown {
			unknown++
			if !held[tuple{l.Local, l.Peer}] && !held[tuple{l.Peer, l.Local}] {
				missing = append(missing, fmt.Sprintf("record %d %s.time_wait unknown: the kernel holds no TIME-WAIT on either side", l.Session, l.Name))
			}
		}
		must, mustNot := l.claims()
		for _, w := range must {
			if !held[w] {
				missing = append(missing, fmt.Sprintf("record %d %s.time_wait %s: the kernel holds no TIME-WAIT on %s ↔ %s", l.Session, l.Name, l.TimeWait, w.local, w.peer))
			}
		}
		for _, w := range mustNot {
			if held[w] {
				wrong = append(wrong, fmt.Sprintf("record %d %s.time_wait %s: the kernel holds a TIME-WAIT on %s ↔ %s", l.Session, l.Name, l.TimeWait, w.local, w.peer))
			}
		}
	}
	if d, ok := mark.Covers(len(missing)); ok && len(wrong) == 0 {
		t.Skipf("%d claims of %d legs lack their TIME-WAIT, and the kernel destroyed %d meanwhile (TCPTimeWaitOverflow): the host's table was full", len(missing), len(legs), d)
	}
	for i, why := range append(wrong, missing...) {
		if i == 5 {
			break
		}
		t.Error(why)
	}
	if bad := len(wrong) + len(missing); bad > 0 {
		t.Errorf("%d claims of %d legs disagree with the kernel", bad, len(legs))
	}
	return unknown
}

// Settle waits until no socket of legs is still closing, so that every
// TIME-WAIT that will be is. Polling the kernel is the only way to see
// it; the wait is bounded.
func Settle(t testing.TB, legs []Leg) {
	t.Helper()
	closing := []sockdiag.State{sockdiag.FinWait1, sockdiag.FinWait2, sockdiag.LastAck, sockdiag.CloseWait, sockdiag.Closing}
	deadline := time.Now().Add(5 * time.Second)
	var busy []string
	for time.Now().Before(deadline) {
		busy = busy[:0]
		for w, s := range states(t, legs) {
			if slices.Contains(closing, s) {
				busy = append(busy, fmt.Sprintf("%s→%s %s", w.local, w.peer, s))
			}
		}
		if len(busy) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d sockets still closing after 5s: %v", len(busy), busy[:min(len(busy), 4)])
}

// states looks up both ends of every leg by 4-tuple and returns the state
// of those that exist. Lookups, not a dump: a dump skips a socket when
// another goes away between two of its replies (see sockdiag.Find), and
// in this host's namespace other tests' TIME-WAIT sockets expire all the
// time.
func states(t testing.TB, legs []Leg) map[tuple]sockdiag.State {
	t.Helper()
	out := map[tuple]sockdiag.State{}
	for _, l := range legs {
		for _, w := range []tuple{{l.Local, l.Peer}, {l.Peer, l.Local}} {
			s, ok, err := sockdiag.Find(w.local, w.peer)
			if err != nil {
				t.Fatalf("sock_diag: %v", err)
			}
			if ok {
				out[w] = s.State
			}
		}
	}
	return out
}
