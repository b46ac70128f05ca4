package demo

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// closedPair makes one loopback connection and ends it: the client closes
// first, or with reset, so that no TIME-WAIT is left at all. It returns
// the server's socket (as a proxy's front leg: local ↔ the client) once
// both ends are closed.
func closedPair(t *testing.T, ln *net.TCPListener, reset bool) tuple {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if reset {
		c.SetLinger(0)
	}
	c.Close()
	io.Copy(io.Discard, s) // EOF or reset: the client's close arrived
	s.Close()
	return tuple{s.LocalAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()}
}

// recordOf fabricates a record whose front leg is sock and claims claim.
func recordOf(id uint64, sock tuple, claim policy.Side) *engine.Teardown {
	return &engine.Teardown{ID: id, Front: engine.LegRecord{TimeWait: claim, Local: sock.local, Peer: sock.peer}}
}

// The matcher catches a record that claims a TIME-WAIT the kernel does not
// hold, and one that denies a TIME-WAIT the kernel holds, on real sockets.
func TestJudgeCatchesContradictionsWithTheKernel(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reset, clientFirst, honest := closedPair(t, ln, true), closedPair(t, ln, false), closedPair(t, ln, false)
	recs := []*engine.Teardown{
		recordOf(1, reset, policy.SideClient),     // claims one the kernel does not hold
		recordOf(2, clientFirst, policy.SideNone), // denies the client's
		recordOf(3, honest, policy.SideClient),    // true
	}
	mine := tuplesOf(recs)
	if err := settle(context.Background(), mine, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	k, err := takeSnapshot(mine)
	if err != nil {
		t.Fatal(err)
	}
	j := judge(recs, k)
	if j.legs != 3 || j.exact != 1 || j.disagree() != 2 {
		t.Fatalf("legs %d, exact %d, disagree %d; want 3, 1, 2: %v", j.legs, j.exact, j.disagree(), j.disagreements())
	}
	got := j.disagreements()
	slices.Sort(got)
	for i, want := range []string{"record 1 front", "record 2 front"} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("disagreement %d = %q, want it about %s", i, got[i], want)
		}
	}
	if j.kernel[holderClient] != 2 || j.claims[holderClient] != 2 {
		t.Errorf("client TIME-WAIT: kernel %d, claims %d; want 2, 2", j.kernel[holderClient], j.claims[holderClient])
	}
}
