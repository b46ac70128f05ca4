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
	pre   uint8     // the state, read after base's counters
	post  tcpCounts // counters right after the FIN
	after uint8     // the state, read after post's counters
	eof   tcpCounts // when the peer's FIN was read
	// sawFW2: the copier saw FIN-WAIT-2 between the FIN and the peer's.
	sawFW2 bool
	// lastFW1 is one more than segsIn at the latest look that proved the
	// leg still in FIN-WAIT-1 after the FIN (0: no such look).
	lastFW1 uint64
}

// beforeFIN reads the leg's state before the proxy's FIN and reports
// whether the kernel already holds the peer's FIN.
func (l *leg) beforeFIN() (peerFINIn bool, rtt int64) {
	if l.peerFIN {
		return true, 0
	}
	a := l.tcp()
	b := l.tcp()
	if l.fo == nil {
		l.fo = new(finObs)
	}
	*l.fo = finObs{taken: a.ok && b.ok, base: a, pre: b.state}
	l.foFresh = true
	return l.fo.taken && peerFINState(b.state), int64(a.rtt)
}

// afterFIN reads the leg right after the proxy's FIN.
func (l *leg) afterFIN() {
	p := l.tcp()
	s := l.tcp()
	l.fo.post, l.fo.after = p, s.state
	l.fo.taken = l.fo.taken && p.ok && s.ok
}

// atPeerFIN reads the leg when the peer's FIN was read after the proxy's.
func (l *leg) atPeerFIN() {
	l.fo.eof = l.tcp()
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
