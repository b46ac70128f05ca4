package engine

import "github.com/closeproxy/closeproxy/policy"

// finObs is what the kernel showed of a leg around the proxy's FIN, from
// which finOrder tells who closed first. Each reading is TCP_INFO; the
// kernel reads a socket's state before its counters, so a state read
// after a reading's counters proves those counters predate any change of
// state.
type finObs struct {
	taken bool      // the proxy sent a FIN from a state it had read
	base  tcpCounts // counters before the FIN
	pre   uint8     // the state, read after base's counters (or base's own when it shows the peer's FIN in)
	post  tcpCounts // counters right after the FIN
	after uint8     // the state, read after post's counters (or post's own when not FIN-WAIT-1)
	eof   tcpCounts // when the peer's FIN was read
	// sawFW2: the copier saw FIN-WAIT-2 between the FIN and the peer's.
	sawFW2 bool
	// lastFW1 is one more than segsIn at the latest look that proved the
	// leg still in FIN-WAIT-1 after the FIN (0: no such look).
	lastFW1 uint64
}

// beforeFIN reads the leg for a decision that may send the proxy's FIN,
// and reports whether the kernel already holds the peer's FIN. Its
// counters are the FIN-order observation's base; the state that proves
// them older than any change of state is preFIN's, read only when a FIN
// is sent. A peer's FIN in before the copier read it also says, by
// what was acknowledged, whether the peer may refuse bytes still on their
// way (mayRefuse).
func (l *leg) beforeFIN() (peerFINIn bool, rtt int64) {
	if l.peerFIN {
		return true, 0
	}
	a := l.tcp()
	if l.fo == nil {
		l.fo = new(finObs)
	}
	*l.fo = finObs{taken: a.ok, base: a, pre: a.state}
	l.foFresh = true
	peerFINIn = a.ok && peerFINState(a.state)
	if peerFINIn {
		l.finAckedAll = a.allSentAcked()
	}
	return peerFINIn, int64(a.rtt)
}

// preFIN reads the state right before the proxy's FIN, after the base's
// counters. A base that already showed the peer's FIN in needs none: its
// FIN came first whatever the counters say. Nor does a base that counted
// no byte the loop has not read (baseBeforePeerFIN).
func (l *leg) preFIN() {
	if peerFINState(l.fo.pre) || l.baseBeforePeerFIN() {
		return
	}
	b := l.tcp()
	l.fo.pre = b.state
	l.fo.taken = l.fo.taken && b.ok
}

// afterFIN reads the leg right after the proxy's FIN. Only FIN-WAIT-1
// needs a second reading: finOrder uses the counters right after the FIN
// for that state alone, and then only if a state read after them proves
// that they predate any change. Any other state already answers, or
// leaves the answer to the readings before the FIN and at the peer's.
func (l *leg) afterFIN() {
	p := l.tcp()
	var s tcpCounts
	if finWait1(p.state) {
		s = l.tcp()
	}
	l.fo.noteAfter(p, s)
}

// noteAfter keeps the readings right after the proxy's FIN: p, and s,
// the state read after p's counters when p was in FIN-WAIT-1 (else none).
// A reading that found the leg closed (both FINs went, as on loopback,
// inside the shutdown call or between the two readings) counts nothing
// more: its counters are also those at the peer's FIN, which atPeerFIN
// need not read again.
func (o *finObs) noteAfter(p, s tcpCounts) {
	o.post, o.after = p, p.state
	o.taken = o.taken && p.ok
	if closedState(p.state) {
		o.eof = p
	}
	if finWait1(p.state) {
		o.after = s.state
		o.taken = o.taken && s.ok
		if s.ok && closedState(s.state) {
			o.eof = s
		}
	}
}

// atPeerFIN reads the leg when the peer's FIN was read after the proxy's.
func (l *leg) atPeerFIN() {
	if l.fo.eofDecides() && !l.fo.eof.ok {
		l.fo.eof = l.tcp()
	}
	l.fo.sawFW2 = l.act.sawFW2.Load()
	l.fo.lastFW1 = l.act.fw1SegsIn.Load()
	l.act.watch.Store(false)
}

// firstFIN tells whose FIN came first on a leg where the proxy sent one,
// from the kernel's readings: the peer's, the proxy's, both (they crossed:
// TIME-WAIT on each side) or unknown.
func (l *leg) firstFIN() policy.Side {
	var o finObs
	if l.fo != nil {
		o = *l.fo
	}
	if l.peerFIN && !o.taken {
		return l.name.Peer() // read before the proxy's FIN was decided
	}
	switch finOrder(o) {
	case orderPeer:
		return l.name.Peer()
	case orderProxy:
		return policy.SideProxy
	case orderCrossed:
		return policy.SideBoth
	}
	return policy.SideUnknown
}

type order int

const (
	orderUnknown order = iota
	orderPeer          // the peer's FIN arrived before the proxy sent its own
	orderProxy         // the proxy's FIN was acknowledged before the peer's FIN
	orderCrossed       // each FIN was sent before the other arrived
)
