package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseMatrixUnderLoss is the close matrix (the -short pairs, every
// cell but timeout) on a network that loses segments: each host drops
// lossPercent of the TCP segments that reach it, at random, except SYNs
// and RSTs (a lost SYN only delays a connect by a second, which the cells'
// timings do not allow for; a lost RST is never sent again, see
// TestLostResetIsExplained), and the timeout cell is left out (its silent
// sessions need the backend to accept, which a lost last ACK of the
// handshake defers past the cut). Data, ACKs and FINs are lost and sent
// again: every stream must still arrive whole (SHA-256 at both ends) and
// every record agree with the kernel's TIME-WAIT sockets by 4-tuple.
//
// With one exception, which no kernel reading shows the proxy: a peer
// whose FIN crossed the proxy's and was lost, or held back in the proxy's
// kernel behind an earlier segment of the peer's that was lost. The
// peer's ACK of the proxy's FIN, sent after its own FIN, overtakes it; the
// proxy reads FIN-WAIT-2 (its FIN acknowledged, the peer's not in), and
// the peer's FIN, sent again, acknowledges the proxy's like a FIN sent
// after it. The record says proxy; both hold TIME-WAIT (each sent its FIN
// before it had the other's). Only a record that says proxy of a leg the
// kernel shows held on both sides, and on which the proxy's host dropped
// a segment of the peer's (an nftables set of their 4-tuples), is
// excused; any other disagreement fails as in the matrix. The same loss
// makes the back leg's grace lose its bet (docs/guarantees.md, known
// gaps) in the pausing-backend cell: a client's FIN sent right after its
// request, lost and sent again once the answer began, looks like the FIN
// of a client that had the answer; that cell admits the cut it leads to
// only where the client's segment was dropped (seen at 10 % loss).
func TestCloseMatrixUnderLoss(t *testing.T) {
	needRoot(t)
	needTool(t, "nft")
	pairs, racing := matrixPairs(true)
	var cells []cell
	for _, c := range matrixCells {
		if c.name != "timeout" {
			cells = append(cells, c)
		}
	}
	res := &matrixResults{}
	loss := &segmentLoss{percent: lossPercent}
	start := time.Now()
	for i, p := range pairs {
		t.Run(p.String(), func(t *testing.T) {
			runPair(t, p, racers[i%len(racers)], racing, res, cells, loss)
		})
	}
	t.Logf("close matrix losing %d %% of segments: %d pairs, %d cells in %v; %d segments dropped, %d of them FINs; %d legs excused (said proxy, both held, a segment of the peer's lost)\n%s",
		loss.percent, len(pairs), res.len(), time.Since(start).Round(time.Second), loss.dropped.Load(), loss.fins.Load(), loss.excused.Load(), res.table())
	if loss.fins.Load() == 0 {
		t.Errorf("no FIN was dropped: the loss tested nothing of the close path")
	}
	u, legs := res.unknown()
	if u*100 > 2*legs {
		t.Errorf("%d of %d legs unknown over the matrix, want at most 2 %%", u, legs)
	}
	// 2 to 5 in 1,000 in runs here: many more would be claims of proxy
	// where the peer's FIN came first or crossed, loss or not.
	if ex := loss.excused.Load(); ex*100 > int64(legs) {
		t.Errorf("%d of %d legs excused, want at most 1 %%", ex, legs)
	}
}

// lossPercent is the share of segments each host drops.
const lossPercent = 3

// segmentLoss is a network that drops percent of the TCP segments reaching
// each host of a topology, SYNs and RSTs excepted (nftables, prerouting);
// each host keeps the 4-tuples of the segments it dropped, as sent, and
// counts the FINs among them.
type segmentLoss struct {
	percent int
	// dropped and fins count the segments and FINs dropped, over every
	// topology; excused, the legs excuse let through.
	dropped, fins, excused atomic.Int64
}

// setUp makes topo's hosts lose segments; at cleanup the drops are counted.
func (l *segmentLoss) setUp(t testing.TB, topo *Topology) {
	t.Helper()
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		nftRules(t, topo, ns, fmt.Sprintf(`table inet closeproxy_loss {
	set lost { type ipv4_addr . inet_service . ipv4_addr . inet_service; flags dynamic; size 65535; }
	chain in {
		type filter hook prerouting priority 0;
		tcp flags & (syn|rst) == 0 numgen random mod 100 < %d jump lose
	}
	chain lose {
		tcp flags & fin == fin counter
		add @lost { ip saddr . tcp sport . ip daddr . tcp dport } counter drop
	}
}
`, l.percent))
		t.Cleanup(func() {
			fins, all := nftCounters(t, topo, ns)
			l.fins.Add(fins)
			l.dropped.Add(all)
		})
	}
}

// nftCounters returns the loss table's two counters in ns: FINs dropped,
// and segments dropped.
func nftCounters(t testing.TB, topo *Topology, ns string) (fins, all int64) {
	t.Helper()
	var out struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct{ Packets int64 } `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(topo.Exec(t, ns, "nft", "-j", "list", "chain", "inet", "closeproxy_loss", "lose")), &out); err != nil {
		t.Fatalf("nft's loss counters in %s: %v", ns, err)
	}
	var counts []int64
	for _, o := range out.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, x := range o.Rule.Expr {
			if x.Counter != nil {
				counts = append(counts, x.Counter.Packets)
			}
		}
	}
	if len(counts) != 2 {
		t.Fatalf("nft's loss chain in %s has %d counters, want 2", ns, len(counts))
	}
	return counts[0], counts[1]
}

// excuse returns recs to judge against held, where each leg the records
// say the proxy alone holds, the kernel holds on both sides, and on which
// the proxy's host dropped a segment of the peer's (lost, from
// lostAtProxy), now says both (see
// TestCloseMatrixUnderLoss for why no reading can tell). The records
// themselves are left as they are.
func (l *segmentLoss) excuse(t testing.TB, lost map[tuple]bool, recs []Record, held map[tuple]bool) []Record {
	t.Helper()
	out := slices.Clone(recs)
	var why []string
	for i, r := range recs {
		for _, leg := range []string{"front", "back"} {
			if !bothHeldPeerLost(lost, held, r, leg) {
				continue
			}
			local, peer := r.Str(leg+".local"), r.Str(leg+".peer")
			c := maps.Clone(out[i]) // the caller's record stays as written
			c[leg+".time_wait"] = "both"
			out[i] = c
			l.excused.Add(1)
			why = append(why, fmt.Sprintf("record %v %s %s ↔ %s", r["id"], leg, local, peer))
		}
	}
	if len(why) > 0 {
		t.Logf("%d legs say proxy where both hold TIME-WAIT, a segment of the peer's lost: %s", len(why), strings.Join(why, "; "))
	}
	return out
}

// bothHeldPeerLost reports whether r's leg says the proxy alone holds
// TIME-WAIT where the kernel holds it on both sides, and the proxy's host
// dropped a segment of the peer's on that leg: no reading can tell.
func bothHeldPeerLost(lost, held map[tuple]bool, r Record, leg string) bool {
	local, peer := r.Str(leg+".local"), r.Str(leg+".peer")
	return r.Str(leg+".time_wait") == "proxy" && held[tuple{local, peer}] && held[tuple{peer, local}] && lostOn(lost, r, leg)
}

// lostAtProxy is the 4-tuples, as tuple{sender, receiver}, of the
// segments the proxy's host of topo dropped (segmentLoss).
func lostAtProxy(t testing.TB, topo *Topology) map[tuple]bool {
	t.Helper()
	return nftTuples(t, topo, topo.Proxy, "closeproxy_loss", "lost")
}

// lostOn reports whether a segment of the peer's on r's leg was lost on
// its way to the proxy.
func lostOn(lost map[tuple]bool, r Record, leg string) bool {
	return lost[tuple{r.Str(leg + ".peer"), r.Str(leg + ".local")}]
}

// lossView is what a lossy cell's judge knows of the network: the
// 4-tuples of the segments the proxy's host dropped (lostAtProxy) and
// those holding TIME-WAIT (scopeTimeWait).
type lossView struct{ lost, held map[tuple]bool }

func (v *lossView) heldBack(r Record, leg string) bool { return finHeldBack(v.lost, r, leg) }

// crossed reports whether the proxy's FIN on r's leg went first only
// because the peer's, sent before it, was lost: the record says the
// proxy's FIN went first and the proxy holds TIME-WAIT, the peer's FIN
// came in after (fin_in_ms), the proxy's host dropped a segment of the
// peer's, and the kernel holds TIME-WAIT on both sides (the FINs
// crossed). A backend that half-closes and goes on reading an upload
// while its FIN is retransmitted lets the client's FIN, passed on,
// reach it first. The kernel judges the leg (segmentLoss.excuse).
func (v *lossView) crossed(r Record, leg string) bool {
	return r.Str(leg+".first_fin") == "proxy" && r.Num(leg+".fin_in_ms") >= 0 && bothHeldPeerLost(v.lost, v.held, r, leg)
}

// peerOf names leg's peer as the records do.
func peerOf(leg string) string {
	if leg == "back" {
		return "backend"
	}
	return "client"
}

// finHeldBack reports whether the peer's FIN on r's leg came first
// because the FIN the proxy passes on to it came late through loss: the
// record says the peer sent the first FIN, the proxy's host dropped a
// segment of the other leg's peer (that FIN, or one before it that held
// it back in the kernel), and that FIN came in after the peer's, or the
// proxy's FIN on r's leg left only once it came (fin_out_ms): then the
// kernel held the peer's FIN before it (first_fin is the kernel's
// reading), though the proxy may read it much later, behind an answer
// its client pauses on (fin_in_ms is when the proxy read it). A
// half-closing client whose FIN is lost lets a backend that answers and
// closes without waiting for EOF close first, where on a clean network
// the client's FIN, passed on at once, leads. The record is true (the
// kernel judges it); the placement the rules make certain assumed the
// FIN's arrival.
func finHeldBack(lost map[tuple]bool, r Record, leg string) bool {
	other, peer := "back", peerOf(leg)
	if leg == "back" {
		other = "front"
	}
	in, out, otherIn := r.Num(leg+".fin_in_ms"), r.Num(leg+".fin_out_ms"), r.Num(other+".fin_in_ms")
	late := otherIn > in || otherIn >= 0 && out >= otherIn
	return r.Str(leg+".first_fin") == peer && in >= 0 && late && lostOn(lost, r, other)
}
