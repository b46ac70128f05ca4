package engine

// finOrder reads who closed first from the kernel's readings around the
// proxy's FIN. Every answer other than unknown is certain:
//
//   - The state before the FIN was CLOSE-WAIT (or later): the peer's FIN
//     was in.
//   - Right after the FIN: FIN-WAIT-2 (ours acknowledged, theirs not in),
//     CLOSING (theirs arrived before ours was acknowledged: crossed),
//     LAST-ACK (theirs arrived between the two readings: peer first).
//   - Still FIN-WAIT-1: once the peer's FIN is read, CLOSING means they
//     crossed; FIN-WAIT-2 seen by a look in between, or exactly one
//     segment received since the FIN or since a later look that proved
//     FIN-WAIT-1 (an ACK of earlier data may come first), means the peer's
//     FIN acknowledged ours. Had they crossed, the peer's FIN could not
//     acknowledge ours and a separate ACK would follow it: two segments at
//     least.
//   - Already closed right after the FIN (the whole exchange ran inside the
//     system call): one segment received since before the FIN means the
//     peer's FIN acknowledged ours; with nothing queued or in flight and no
//     data either way, exactly one segment sent means the proxy's FIN also
//     acknowledged the peer's, which was in first.
//
// Anything else is unknown: the proxy holds TIME-WAIT and the peer may too.
func finOrder(o finObs) order {
	if !o.taken {
		return orderUnknown
	}
	switch o.pre {
	case stateCloseWait, stateLastAck, stateClosing:
		return orderPeer
	case stateEstablished:
	default:
		return orderUnknown
	}
	switch o.after {
	case stateFinWait2:
		return orderProxy
	case stateClosing:
		return orderCrossed
	case stateLastAck, stateCloseWait:
		return orderPeer
	case stateFinWait1:
		return afterFinWait1(o)
	case stateClose, stateTimeWait:
		return afterClosed(o)
	}
	return orderUnknown
}

func afterFinWait1(o finObs) order {
	switch {
	case !o.eof.ok:
		return orderUnknown
	case o.eof.state == stateClosing:
		return orderCrossed
	case o.sawFW2, o.eof.segsIn-o.post.segsIn == 1:
		return orderProxy
	case o.lastFW1 != 0 && uint64(o.eof.segsIn) == o.lastFW1: // one segment since
		return orderProxy
	}
	return orderUnknown
}

func afterClosed(o finObs) order {
	if !o.eof.ok {
		return orderUnknown
	}
	if o.eof.segsIn-o.base.segsIn == 1 {
		return orderProxy
	}
	quiet := o.base.notsent == 0 && o.base.unacked == 0 &&
		o.eof.dataSegsIn == o.base.dataSegsIn && o.eof.dataSegsOut == o.base.dataSegsOut
	if quiet && o.eof.segsOut-o.base.segsOut == 1 {
		return orderPeer
	}
	return orderUnknown
}

// baseBeforePeerFIN reports that the base's counters cannot hold the
// peer's FIN, from the bytes the loop has read since: the kernel counts a
// FIN as one byte received, after every data byte, and no read returns
// it, so a base whose bytes received the loop has read to the last (and
// not one more) holds no FIN. Before the proxy's own FIN only the peer's
// FIN (or a reset, after which no FIN is sent) changes an established
// socket's state, so those counters predate any change of state, which
// is what the second reading would prove. The base's state, read before
// them, stands for the state before the FIN; a peer's FIN that comes
// after the base and before the proxy's shows right after it, as
// LAST-ACK or, both FINs done, in the counters (finOrder). A leg read
// some other way (on goroutines, or before the loop had it) has counted
// fewer bytes, never more, and is read again. A kernel that does not
// report bytes received reports 0, and only a leg that read nothing
// matches that: never taken as proof.
func (l *leg) baseBeforePeerFIN() bool {
	got, ok := readThrough(l.conn)
	b := l.fo.base
	return ok && b.ok && b.state == stateEstablished && b.received > 0 && b.received == got
}

// eofDecides says whether finOrder needs the counters at the peer's FIN:
// only where the readings around the proxy's FIN left it in FIN-WAIT-1 or
// already closed, the peer's FIN not in before it. Any other reading
// answers alone.
func (o *finObs) eofDecides() bool {
	return o.taken && o.pre == stateEstablished &&
		(o.after == stateFinWait1 || o.after == stateClose || o.after == stateTimeWait)
}

// closedState reports CLOSE: a socket that counts no segment any more
// (its TIME-WAIT, if any, is a socket of its own).
func closedState(s uint8) bool { return s == stateClose }

// finWait1 reports FIN-WAIT-1: the proxy's FIN sent, not acknowledged.
func finWait1(s uint8) bool { return s == stateFinWait1 }

// finWait2 reports FIN-WAIT-2: the proxy's FIN sent and acknowledged.
func finWait2(s uint8) bool { return s == stateFinWait2 }

// peerFINState reports a state in which the kernel holds the peer's FIN.
func peerFINState(s uint8) bool {
	return s == stateCloseWait || s == stateLastAck || s == stateClosing
}

// lookForFinWait2 runs on the copier reading this leg, after each read
// while our FIN's acknowledgement is awaited: FIN-WAIT-2 means the peer
// acknowledged our FIN before it sent its own.
//
// A look that finds FIN-WAIT-1 reads twice: the state read after the
// counters proves that every segment they count came while FIN-WAIT-1
// held. The highest such count is kept (copier and executor both look).
func (l *leg) lookForFinWait2() {
	a := l.tcp()
	switch a.state {
	case stateFinWait2:
		l.act.sawFW2.Store(true)
		l.act.watch.Store(false)
	case stateFinWait1:
		if b := l.tcp(); a.ok && b.ok && b.state == stateFinWait1 {
			for n := uint64(a.segsIn) + 1; ; {
				old := l.act.fw1SegsIn.Load()
				if old >= n || l.act.fw1SegsIn.CompareAndSwap(old, n) {
					break
				}
			}
		}
	default:
		l.act.watch.Store(false)
	}
}

// watchFinWait2 asks the copier to look for FIN-WAIT-2 after the proxy's
// FIN left the leg in FIN-WAIT-1.
func (l *leg) watchFinWait2() {
	if l.fo != nil && l.fo.after == stateFinWait1 {
		l.act.watch.Store(true)
	}
}
