package demo

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

var (
	proxyFront = netip.MustParseAddrPort("127.0.0.1:8080")
	proxyBack  = netip.MustParseAddrPort("127.0.0.1:40001")
	client     = netip.MustParseAddrPort("127.0.0.1:50001")
	backendAt  = netip.MustParseAddrPort("127.0.0.1:8081")
)

// fabricated is a record of one session whose legs claim front and back.
func fabricated(id uint64, front, back policy.Side) *engine.Teardown {
	return &engine.Teardown{
		ID:    id,
		Front: engine.LegRecord{TimeWait: front, Local: proxyFront, Peer: client},
		Back:  engine.LegRecord{TimeWait: back, Local: proxyBack, Peer: backendAt},
	}
}

// Every claim against every state of the kernel, on a front leg.
func TestJudgeClaims(t *testing.T) {
	atProxy, atClient := tuple{proxyFront, client}, tuple{client, proxyFront}
	for _, c := range []struct {
		claim   policy.Side
		held    []tuple
		agree   bool
		unknown bool
	}{
		{policy.SideProxy, []tuple{atProxy}, true, false},
		{policy.SideProxy, []tuple{atClient}, false, false},
		{policy.SideProxy, []tuple{atProxy, atClient}, false, false},
		{policy.SideClient, []tuple{atClient}, true, false},
		{policy.SideClient, nil, false, false},
		{policy.SideBoth, []tuple{atProxy, atClient}, true, false},
		{policy.SideBoth, []tuple{atProxy}, false, false},
		{policy.SideNone, nil, true, false},
		{policy.SideNone, []tuple{atClient}, false, false},
		{policy.SideUnknown, []tuple{atClient}, true, true},
		{policy.SideUnknown, []tuple{atProxy, atClient}, true, true},
		{policy.SideUnknown, nil, false, false},
	} {
		held := map[tuple]bool{}
		for _, h := range c.held {
			held[h] = true
		}
		j := judge([]*engine.Teardown{fabricated(1, c.claim, policy.SideNone)}, snapshot{timeWait: held})
		if agree := j.disagree() == 0; agree != c.agree || (j.unknown == 1) != c.unknown {
			t.Errorf("front claims %s, kernel holds %v: agree %v, unknown %d; want %v, %v (%v)",
				c.claim, c.held, agree, j.unknown, c.agree, c.unknown, j.disagreements())
		}
	}
}

// A 4-tuple two records name is judged for the later record only.
func TestJudgeReusedTupleJudgesTheLaterRecord(t *testing.T) {
	held := map[tuple]bool{{client, proxyFront}: true}
	recs := []*engine.Teardown{
		fabricated(1, policy.SideNone, policy.SideNone),
		fabricated(2, policy.SideClient, policy.SideNone),
	}
	j := judge(recs, snapshot{timeWait: held})
	if j.reused != 2 || j.legs != 2 || j.exact != 2 || j.disagree() != 0 {
		t.Errorf("reused %d, legs %d, exact %d, wrong %v; want 2 reused (front and back), 2 legs judged, both exact",
			j.reused, j.legs, j.exact, j.disagreements())
	}
	if j.kernel[holderClient] != 1 || j.claims[holderClient] != 1 {
		t.Errorf("client: kernel %d, claims %d; want 1, 1", j.kernel[holderClient], j.claims[holderClient])
	}
	if w := judge(recs[1:], snapshot{}).disagreements(); len(w) == 0 || !strings.HasPrefix(w[0], "record 2 front") {
		t.Errorf("a disagreement should name the record and leg: %v", w)
	}
}

// A client's port that came round at once names two front legs: the later
// connection is the one accepted later (the higher id), whichever record
// was written first.
func TestJudgeReusedFrontTupleByAcceptOrder(t *testing.T) {
	held := map[tuple]bool{{proxyFront, client}: true}
	later := fabricated(2, policy.SideProxy, policy.SideNone)
	earlier := fabricated(1, policy.SideNone, policy.SideNone)
	earlier.Back.Local = netip.MustParseAddrPort("127.0.0.1:40002")
	j := judge([]*engine.Teardown{later, earlier}, snapshot{timeWait: held})
	if j.disagree() != 0 || j.reused != 1 || j.exact != 3 {
		t.Errorf("reused %d, exact %d, wrong %v; want record 1's front leg skipped, the rest exact",
			j.reused, j.exact, j.disagreements())
	}
}

// A 4-tuple a live socket holds was taken over by a connection with no
// record yet (a warm pool's): the record naming it is not judged.
func TestJudgeTupleTakenOverByALiveSocket(t *testing.T) {
	k := snapshot{live: map[tuple]bool{{proxyBack, backendAt}: true}}
	j := judge([]*engine.Teardown{fabricated(1, policy.SideNone, policy.SideBackend)}, k)
	if j.reused != 1 || j.legs != 1 || j.exact != 1 || j.disagree() != 0 {
		t.Errorf("reused %d, legs %d, exact %d, wrong %v; want the back leg skipped, the front judged exact",
			j.reused, j.legs, j.exact, j.disagreements())
	}
}

// Run's verdict fails on one contradicted leg or one failed request.
func TestVerdictFailsOnAnyDisagreementOrFailedRequest(t *testing.T) {
	good := row{j: judgement{legs: 2, exact: 2}, load: load{ok: 1}}
	if err := verdict([]row{good}); err != nil {
		t.Errorf("agreeing rows: %v", err)
	}
	wrong := row{j: judgement{legs: 2, exact: 1, wrong: []string{"record 1 front"}}}
	failed := row{load: load{ok: 1, failed: 1}}
	for _, rows := range [][]row{{good, wrong}, {failed, good}} {
		if err := verdict(rows); err == nil {
			t.Errorf("verdict of %+v: nil, want an error", rows)
		}
	}
}

// A back leg whose 4-tuple the backend accepted again for a connection
// with no record (a warm pool's, gone by the snapshot) is not judged: the
// later SYN took the backend's TIME-WAIT over.
func TestJudgeSkipsBackLegsAcceptedAgain(t *testing.T) {
	proxyAt, be := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:9000")
	td := &engine.Teardown{ID: 1}
	td.Back.Local, td.Back.Peer, td.Back.TimeWait = proxyAt, be, policy.SideBackend
	k := snapshot{timeWait: map[tuple]bool{}, live: map[tuple]bool{}, accepts: map[netip.AddrPort]int{proxyAt: 2}}
	if j := judge([]*engine.Teardown{td}, k); j.reused != 1 || j.disagree() != 0 {
		t.Errorf("accepted twice: reused %d, disagreements %d; want 1, 0", j.reused, j.disagree())
	}
	k.accepts[proxyAt] = 1
	if j := judge([]*engine.Teardown{td}, k); j.reused != 0 || j.disagree() != 1 {
		t.Errorf("accepted once, no TIME-WAIT: reused %d, disagreements %d; want 0, 1", j.reused, j.disagree())
	}
}

// A kernel whose TIME-WAIT table was full destroyed sockets while the row
// ran: a leg that only misses the TIME-WAIT its record claims is left
// unchecked, never excused beyond the count destroyed; a TIME-WAIT the
// record denies is a contradiction whatever the kernel destroyed.
func TestJudgeExcusesOnlyMissingTimeWaitTheKernelDestroyed(t *testing.T) {
	missing := fabricated(1, policy.SideClient, policy.SideNone) // the kernel holds none
	denied := fabricated(2, policy.SideNone, policy.SideNone)
	denied.Front.Peer = netip.MustParseAddrPort("127.0.0.1:50002")
	denied.Back.Local = netip.MustParseAddrPort("127.0.0.1:40002")
	held := map[tuple]bool{{denied.Front.Peer, proxyFront}: true}
	for _, c := range []struct {
		destroyed, unverified, disagree int
	}{{0, 0, 2}, {1, 1, 1}, {5, 1, 1}} {
		j := judge([]*engine.Teardown{missing, denied}, snapshot{timeWait: held})
		j.excuse(c.destroyed)
		if j.unverified != c.unverified || j.disagree() != c.disagree {
			t.Errorf("%d destroyed: unverified %d, disagree %d (%v); want %d, %d",
				c.destroyed, j.unverified, j.disagree(), j.disagreements(), c.unverified, c.disagree)
		}
	}
	two := []*engine.Teardown{missing, fabricated(3, policy.SideClient, policy.SideNone)}
	two[1].Front.Peer = netip.MustParseAddrPort("127.0.0.1:50003")
	two[1].Back.Local = netip.MustParseAddrPort("127.0.0.1:40003")
	j := judge(two, snapshot{})
	if j.excuse(1); j.unverified != 0 || j.disagree() != 2 {
		t.Errorf("two missing, one destroyed: unverified %d, disagree %d; want 0, 2", j.unverified, j.disagree())
	}
}

// Legs left unchecked fail the demo, saying why, without blaming the
// records.
func TestVerdictNamesTheFullTable(t *testing.T) {
	r := row{j: judgement{legs: 2, exact: 1, unverified: 1}, load: load{ok: 1}, destroyed: 3}
	err := verdict([]row{r})
	if err == nil || !strings.Contains(err.Error(), "tcp_max_tw_buckets") || strings.Contains(err.Error(), "contradicts") {
		t.Errorf("verdict: %v; want the full table named, no contradiction", err)
	}
	if _, alone := err.(*uncheckedError); !alone {
		t.Errorf("verdict %T, want *uncheckedError itself: the demo's test skips on that type alone", err)
	}
	contradicted := r
	contradicted.j.wrong = []string{"record 1 front"}
	if _, alone := verdict([]row{contradicted}).(*uncheckedError); alone {
		t.Error("with a contradiction too, the verdict is still the full table alone: the demo's test would skip it")
	}
	if v := r.verdict(row{}); !strings.Contains(v, "UNCHECKED on 1 legs") {
		t.Errorf("row verdict %q, want it to say 1 leg unchecked", v)
	}
}

// A front leg whose target put TIME-WAIT on the client (or nowhere), held
// on the proxy because the client may have waited for EOF (rule 1), is
// counted so that the verdict can say why the proxy holds it; one whose
// target was the proxy is not.
func TestJudgeCountsTheProxysFINToAnEOFReader(t *testing.T) {
	held := map[tuple]bool{{proxyFront, client}: true}
	for _, c := range []struct {
		target policy.Target
		reason policy.Reason
		want   int
	}{
		{policy.TargetPeer, policy.ReasonAwaitsEOF, 1},
		{policy.TargetNowhere, policy.ReasonAwaitsEOF, 1},
		{policy.TargetProxy, policy.ReasonNone, 0},
		{policy.TargetPeer, policy.ReasonGraceExpired, 0},
	} {
		rec := fabricated(1, policy.SideProxy, policy.SideNone)
		rec.Front.Target, rec.Front.Reason = c.target, c.reason
		j := judge([]*engine.Teardown{rec}, snapshot{timeWait: held})
		if j.eofFirst != c.want {
			t.Errorf("target %s reason %q: %d legs counted, want %d", c.target, c.reason, j.eofFirst, c.want)
		}
	}
	r := row{j: judge([]*engine.Teardown{func() *engine.Teardown {
		rec := fabricated(1, policy.SideProxy, policy.SideNone)
		rec.Front.Target, rec.Front.Reason = policy.TargetPeer, policy.ReasonAwaitsEOF
		return rec
	}()}, snapshot{timeWait: held})}
	r.j.kernel[holderProxyFront] = 1
	if v := r.verdict(row{}); !strings.Contains(v, "peer_may_await_eof") {
		t.Errorf("verdict %q does not say why the proxy holds its TIME-WAIT", v)
	}
}
