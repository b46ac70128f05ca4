package demo

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// tuple names one TCP socket by its local and peer address. On loopback
// both ends of a connection are sockets of this host: a connection's two
// sockets are {a, b} and {b, a}.
type tuple struct{ local, peer netip.AddrPort }

func (t tuple) reverse() tuple { return tuple{t.peer, t.local} }

// holder is who holds a socket of a row's connection.
type holder int

const (
	holderClient holder = iota
	holderProxyFront
	holderProxyBack
	holderBackend
	holders
)

// counts is TIME-WAIT per holder.
type counts [holders]int

// judgement is how a row's teardown records compared with the kernel's
// TIME-WAIT sockets, leg by leg, by 4-tuple.
type judgement struct {
	kernel counts // TIME-WAIT the kernel holds on the judged legs' sockets
	claims counts // TIME-WAIT the records place on them (unknown places none)
	legs   int    // legs judged
	exact  int    // legs whose claim the kernel confirms socket by socket
	both   int    // legs claiming both (FINs crossed), of exact
	// unknown is the legs claiming unknown where the kernel holds
	// TIME-WAIT on at least one side: consistent, but not exact.
	unknown int
	// eofFirst is the legs whose TIME-WAIT the kernel holds on the proxy
	// although their target put it elsewhere, because the peer may have
	// been waiting for EOF (rule 1: reason peer_may_await_eof).
	eofFirst int
	// reused is the legs not judged because a later connection took
	// their 4-tuple: a later record names it too, a live socket holds it
	// (a connection with no record yet, such as a warm pool's), or the
	// backend accepted it more often than records name it.
	reused int
	wrong  []string // every disagreement, worded, but missing ones
	// missing is the disagreements where the kernel only lacks a
	// TIME-WAIT the record claims: a kernel whose TIME-WAIT table is full
	// closes such sockets instead (TCPTimeWaitOverflow).
	missing []string
	// unverified is the missing legs excused by the sockets the kernel
	// destroyed meanwhile: neither confirmed nor contradicted.
	unverified int
}

// disagree is how many judged legs the kernel contradicts.
func (j judgement) disagree() int { return len(j.wrong) + len(j.missing) }

// disagreements is every disagreement, worded.
func (j judgement) disagreements() []string { return append(slices.Clone(j.wrong), j.missing...) }

// excuse leaves unjudged the legs that only miss a TIME-WAIT, when the
// kernel destroyed at least as many TIME-WAIT sockets while the row ran.
func (j *judgement) excuse(destroyed int) {
	if destroyed > 0 && len(j.missing) <= destroyed {
		j.unverified, j.missing = len(j.missing), nil
	}
}

// legView is one leg of a record as the matcher sees it: the proxy's
// socket and who holds each end.
type legView struct {
	rec       *engine.Teardown
	name      string // "front" or "back"
	peer      string // "client" or "backend"
	l         *engine.LegRecord
	near, far holder // the proxy's end, the peer's end
	proxy     tuple  // the proxy's socket; the peer's is proxy.reverse()
}

// legsOf lists the legs of recs that name both addresses, in order.
func legsOf(recs []*engine.Teardown) []legView {
	var out []legView
	for _, td := range recs {
		for _, v := range []legView{
			{rec: td, name: "front", peer: "client", l: &td.Front, near: holderProxyFront, far: holderClient},
			{rec: td, name: "back", peer: "backend", l: &td.Back, near: holderProxyBack, far: holderBackend},
		} {
			if v.l.Local.IsValid() && v.l.Peer.IsValid() {
				v.proxy = tuple{v.l.Local, v.l.Peer}
				out = append(out, v)
			}
		}
	}
	return out
}

// judge matches every leg's time_wait claim to the kernel's TIME-WAIT
// sockets, by exact 4-tuple. Records come in the order they were written.
// A 4-tuple the kernel handed out again within the run (taking over any
// TIME-WAIT of the earlier connection) is judged for the later connection
// only, and not at all when the later connection is still live. The later
// of two front legs is the one with the higher id: ids are taken at
// accept, while records are written as sessions end, in no set order. The
// later of two back legs is the one written last: a pooled connection
// serves sessions out of id order.
func judge(recs []*engine.Teardown, k snapshot) judgement {
	legs := legsOf(recs)
	last := map[tuple]int{}
	named := map[netip.AddrPort]int{} // back legs by the proxy's address
	for i, v := range legs {
		if v.name == "back" {
			named[v.proxy.local]++
		} else if prev, seen := last[v.proxy]; seen && legs[prev].rec.ID > v.rec.ID {
			continue
		}
		last[v.proxy] = i
	}
	var j judgement
	for i, v := range legs {
		unrecorded := v.name == "back" && k.accepts != nil && k.accepts[v.proxy.local] > named[v.proxy.local]
		if last[v.proxy] != i || unrecorded || k.live[v.proxy] || k.live[v.proxy.reverse()] {
			j.reused++
			continue
		}
		j.judgeLeg(v, k.timeWait)
	}
	return j
}

// judgeLeg tallies one leg and records why it disagrees, if it does.
func (j *judgement) judgeLeg(v legView, held map[tuple]bool) {
	j.legs++
	atProxy, atPeer := held[v.proxy], held[v.proxy.reverse()]
	if atProxy {
		j.kernel[v.near]++
		if v.l.Target != policy.TargetProxy && v.l.Reason == policy.ReasonAwaitsEOF {
			j.eofFirst++
		}
	}
	if atPeer {
		j.kernel[v.far]++
	}
	claimProxy, claimPeer, ok := claimOf(v.l.TimeWait)
	switch {
	case !ok && (atProxy || atPeer):
		j.unknown++
		return
	case !ok:
		j.missing = append(j.missing, v.describe("the kernel holds no TIME-WAIT on either side"))
		return
	}
	if claimProxy {
		j.claims[v.near]++
	}
	if claimPeer {
		j.claims[v.far]++
	}
	if claimProxy != atProxy || claimPeer != atPeer {
		why := v.describe(fmt.Sprintf("the kernel holds TIME-WAIT at the proxy: %s, at the %s: %s",
			yesNo(atProxy), v.peer, yesNo(atPeer)))
		if atProxy && !claimProxy || atPeer && !claimPeer {
			j.wrong = append(j.wrong, why)
		} else {
			j.missing = append(j.missing, why)
		}
		return
	}
	j.exact++
	if v.l.TimeWait == policy.SideBoth {
		j.both++
	}
}

// claimOf says where a time_wait claim puts TIME-WAIT: at the proxy's
// end, at the peer's end. ok is false for unknown, which only claims that
// one of the two exists.
func claimOf(s policy.Side) (proxy, peer, ok bool) {
	switch s {
	case policy.SideProxy:
		return true, false, true
	case policy.SideClient, policy.SideBackend:
		return false, true, true
	case policy.SideBoth:
		return true, true, true
	case policy.SideUnknown:
		return false, false, false
	}
	return false, false, true // none
}

// describe words a disagreement with what the record said of the leg.
func (v legView) describe(kernel string) string {
	return fmt.Sprintf("record %d %s %s→%s: time_wait %s (first_fin %s, close %s, reason %q, outcome %s); %s",
		v.rec.ID, v.name, v.l.Local, v.l.Peer, v.l.TimeWait, v.l.FirstFIN, v.l.Close, v.l.Reason, v.rec.Outcome, kernel)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// tuplesOf is every socket of recs' legs, both ends, and who holds it:
// what settle waits on.
func tuplesOf(recs []*engine.Teardown) map[tuple]holder {
	out := map[tuple]holder{}
	for _, v := range legsOf(recs) {
		out[v.proxy], out[v.proxy.reverse()] = v.near, v.far
	}
	return out
}

// directCounts is what the kernel holds for connections straight from
// clients to the backend: each tuple is a client's socket.
func directCounts(clients, held map[tuple]bool) counts {
	var c counts
	for t := range clients {
		if held[t] {
			c[holderClient]++
		}
		if held[t.reverse()] {
			c[holderBackend]++
		}
	}
	return c
}
