package engine

import (
	"fmt"
	"time"

	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// decide asks the policy what to do with l after ev and does it.
func (x *executor) decide(l *leg, ev policy.Event) {
	if l.peerRST && ev != policy.Cut && ev != policy.LateData {
		// Reset by its peer: the direction from it reads what came
		// first, and its end ends the leg (peerReset). Only a cut (idle
		// timeout, shutdown, the other leg's reset) or late data cannot
		// wait for it.
		return
	}
	f := x.facts(l, ev)
	defer l.decided()
	d := policy.Decide(f)
	l.target = d.Target // auto keeps its first choice for the rest of this close
	x.rec.decided(l.name, d)
	switch d.Action {
	case policy.FIN:
		if l.pol.TimeWait == policy.TargetAuto && !f.PeerFINIn && x.s.Placing != nil && l.unplace == nil {
			l.unplace = x.s.Placing(l.name, x.rec.td.Leg(l.name).Peer)
		}
		x.fin(l, d.Wait)
	case policy.Withhold:
		l.phase, l.probe = phaseWithholding, d.Probe
		l.arm(time.Now(), d.Wait)
		if l.pol.TimeWait == policy.TargetAuto && x.s.Hold != nil && l.release == nil {
			l.release = x.s.Hold(l.name, x.rec.td.Leg(l.name).Peer)
		}
	case policy.SafeReset:
		x.safeReset(l, d.Wait, f.PeerFINIn)
	case policy.Reset:
		if d.Wait > 0 { // late data's: the leg's size class has no room for the reason
			l.due = dueLateData
			x.startQueueDrain(l, d.Wait)
			return
		}
		x.rst(l, d.Reason, l.resetCuts())
		if ev == policy.HalfCloseExpired {
			x.cutAll(x.timeoutOutcome(), errHalfClose)
		}
	case policy.Finish:
		x.finish(l)
	}
}

// timeoutOutcome is a timer's outcome: drained once shutdown ends
// sessions, timeout otherwise.
func (x *executor) timeoutOutcome() Outcome {
	if x.draining {
		return OutcomeDrained
	}
	return OutcomeTimeout
}

// facts gathers what the policy needs about l: for a decision that may
// send a FIN, from the kernel.
func (x *executor) facts(l *leg, ev policy.Event) policy.Facts {
	f := policy.Facts{
		Leg: l.name, Target: l.target, Fallback: l.pol.Fallback, Event: ev, FINSent: l.finSent,
		PeerFINIn: l.peerFIN, HalfClose: l.pol.HalfCloseTimeout, DrainTimeout: l.pol.DrainTimeout,
		// A caller's word that the peer reads to EOF holds for every
		// event (a peer's FIN during a withhold too); the kernel's
		// readings below add to it where a decision may send a FIN.
		PeerMayAwaitEOF: l.awaitsEOF,
	}
	if l.target == policy.TargetAuto && x.s.Auto != nil {
		f.Auto = x.s.Auto(l.name, x.rec.td.Leg(l.name).Peer)
	}
	switch ev {
	case policy.SendDone, policy.GraceExpired, policy.ProbeExpired, policy.Drain:
		var rtt int64
		f.PeerFINIn, rtt = l.beforeFIN()
		if ev == policy.SendDone && f.PeerFINIn {
			// The proxy's FIN comes second: the policy decides from the
			// target alone (policy.Decide's ending), and mayAwaitEOF's
			// SIOCOUTQ would be a system call for nothing.
			return f
		}
		f.PeerMayAwaitEOF = x.mayAwaitEOF(l)
		f.OtherSideDone = x.otherSideDone(l)
		f.Grace = policy.Grace{Max: l.pol.PeerFinGrace, Adaptive: l.pol.AdaptiveGrace,
			MaxPause: time.Duration(l.act.maxPause.Load()), RTT: time.Duration(rtt)}
	}
	return f
}

// decided forgets what facts read for a decision once it is carried out:
// a later one reads afresh.
func (l *leg) decided() { l.foFresh, l.sendQ = false, -1 }

// mayAwaitEOF applies rule 1: a peer that sent nothing since the last bytes
// the proxy sent it, or that has not even acknowledged them yet, may be
// waiting for EOF. (Its bytes are stamped when the proxy reads them: a
// peer whose bytes waited unread in the proxy may have sent them before
// the proxy's last ones, and be waiting after all. Withholding is the bet
// the target makes; see the package doc.)
func (x *executor) mayAwaitEOF(l *leg) bool {
	if l.awaitsEOF || l.mayEOF {
		return true
	}
	in, out := l.act.lastIn.Load(), l.act.lastOut.Load()
	switch {
	case out == 0:
		return false // the proxy never sent it a byte: it awaits nothing of ours
	case in <= out:
		return true
	}
	q, err := sendQueue(l.conn)
	if err == nil {
		l.sendQ = q
	}
	return err == nil && q > 0
}

// otherSideDone says whether nothing l's peer may still send can matter:
// l ends alone (http1 knows where its messages end), or l is the back leg
// and the client closed after the whole answer (doneReading), unless the
// relay is a tunnel, where nothing says where an answer ends
// (Session.Tunnel). A backend that half-closed may always still read, so
// a pausing client's stream is never ended by a bet on the front leg.
func (x *executor) otherSideDone(l *leg) bool {
	o := l.other(x)
	switch {
	case o == nil:
		return true
	case l.name == policy.Front, x.s.Tunnel:
		return false
	}
	return o.doneReading()
}

// backlogged reports that l's peer's bytes wait in the proxy: its copier
// is writing them on, or they sit unread in the socket.
func (x *executor) backlogged(l *leg) bool {
	if d := x.from(l); d != nil && !d.done && d.flow.busy.Load() {
		return true
	}
	q, err := recvQueue(l.conn)
	return err == nil && q > 0
}

// from returns the direction reading l's peer.
func (x *executor) from(l *leg) *dir {
	for _, d := range x.dirs {
		if d.src == l {
			return d
		}
	}
	return nil
}

// fin sends the proxy's FIN on l, first or second as the kernel says, and
// waits for the peer's, at most wait of its silence.
func (x *executor) fin(l *leg, wait time.Duration) {
	// Second, on a leg done both ways, to a peer that acknowledged every
	// byte and has not reset since its FIN (refusesNothing): nothing is
	// left to watch or wait for, and the close sends the FIN, with no
	// shutdown of its own (the usual short connection's back leg).
	byClose := l.peerFIN && l.inDone && l.refusesNothing()
	l.readyFIN()
	if !byClose {
		if shutdownHook != nil {
			shutdownHook(l.name)
		}
		if err := l.conn.CloseWrite(); err != nil {
			x.finFailed(l, err)
			return
		}
	}
	l.finSent, l.ackAt = true, time.Time{}
	x.rec.finOut(l.name)
	if !l.peerFIN {
		l.afterFIN()
		l.watchFinWait2()
	}
	switch {
	case byClose:
		x.closeFINs(l, l.firstFIN())
		return
	case l.inDone:
		x.finish(l)
		return
	}
	l.phase = phaseFINSent
	if x.draining {
		wait = min(wait, DrainGrace)
	}
	now := time.Now()
	l.finTime = now
	l.arm(now, wait)
	// Acknowledged at once (FIN-WAIT-2 right after it, as on loopback):
	// the FIN has gone and the half-close counts from now; else the
	// looks find when (phaseFINSent).
	l.finGone = l.fo != nil && finWait2(l.fo.after)
	l.at = l.nextWatch(now)
}

// readyFIN takes the readings the FIN's order is told from, just before
// the proxy's FIN: none when the peer's was read (ours is second).
func (l *leg) readyFIN() {
	if l.peerFIN {
		l.fo = &finObs{}
	} else {
		if !l.foFresh {
			l.beforeFIN()
		}
		l.preFIN()
	}
	l.foFresh = false
}

// finFailed: shutting down writing failed; the peer is gone.
func (x *executor) finFailed(l *leg, err error) {
	if l.resetByPeer() {
		x.peerReset(l)
		return
	}
	x.cutAll(OutcomeError, err)
}

// finish closes l once both FINs are through, and records whose came first.
// Where the peer's FIN was not last and the proxy sent it bytes it may not
// have taken (mayRefuse), the peer's answer to the proxy's FIN decides
// first: a peer that closed before those bytes came refuses them with an
// RST, and then holds no TIME-WAIT (its reset is recorded instead).
func (x *executor) finish(l *leg) {
	first := l.firstFIN()
	if first != policy.SideProxy && l.phase != phaseAnswering && l.mayRefuse() {
		switch closed, reset := l.closedBy(); {
		case reset:
			x.peerReset(l)
			return
		case !closed:
			x.awaitAnswer(l)
			return
		}
	}
	x.closeFINs(l, first)
}

// closeFINs closes l after a FIN exchange, first's FIN the first.
func (x *executor) closeFINs(l *leg, first policy.Side) {
	x.rec.firstFIN(l.name, first)
	x.rec.closed(l.name, policy.CloseFIN)
	l.closeSocket()
}

// awaitAnswer waits for l's peer to answer the proxy's FIN, which came
// second behind bytes the peer has not acknowledged: its ACK (the kernel
// closes the socket) or its RST, polled. The record waits with it: until
// then the peer may still refuse what it was sent, and hold no
// TIME-WAIT. The wait follows the peer as it takes those bytes
// (followReader: drain_timeout from its latest progress), and a peer that
// takes nothing is a paused reader, cut at idle_timeout (`timeout`, the
// leg reset and cut). Once every byte is acknowledged, the FIN's ACK is
// waited for drain_timeout at most: no answer by then, l is closed as a
// FIN exchange.
func (x *executor) awaitAnswer(l *leg) {
	l.sendQ = -1
	if q, err := sendQueue(l.conn); err == nil {
		l.sendQ = q
	}
	l.startPolling(phaseAnswering, l.pol.DrainTimeout)
}

// pollAnswer looks whether l's peer answered the proxy's FIN, and whether
// it took more of what it was sent.
func (x *executor) pollAnswer(l *leg, now time.Time) {
	closed, reset := l.closedBy()
	switch {
	case reset:
		x.peerReset(l)
		return
	case closed:
		x.finish(l) // in phaseAnswering: it asks no more
		return
	}
	q, err := sendQueue(l.conn)
	var pause time.Duration // a peer that owes acknowledgements of bytes, not only of the FIN, may pause
	if q > 1 {
		pause = x.s.Idle
	}
	switch {
	case err == nil && l.followReader(now, q, true, pause):
	case err != nil && now.Before(l.until): // the queue unreadable: the answer alone can end the wait
		l.pollAgain(now)
	case l.paused: // idle_timeout since the peer last took a byte
		x.cutAll(x.timeoutOutcome(), fmt.Errorf("idle_timeout: the peer took nothing of what it was sent for %s", x.s.Idle))
	default:
		x.finish(l)
	}
}

// safeReset resets l once the peer's stream was read to its end (if its
// FIN is in) and every byte sent on l is acknowledged.
func (x *executor) safeReset(l *leg, wait time.Duration, peerFINIn bool) {
	if peerFINIn && !l.inDone {
		l.phase, l.budget, l.at = phaseResetPending, wait, time.Time{}
		return
	}
	x.startQueueDrain(l, wait)
}

// cutDelivered resets l, whose stream toward its peer was cut, once the
// peer acknowledged what was sent on it (drain_timeout at most): what
// came before the cut is delivered first.
func (x *executor) cutDelivered(l *leg) {
	l.due = dueCut
	x.startQueueDrain(l, l.pol.DrainTimeout)
}

// startQueueDrain resets l now if its send queue is empty, else polls it
// for up to wait. Polling SIOCOUTQ is the only way to see it empty.
func (x *executor) startQueueDrain(l *leg, wait time.Duration) {
	q, err := l.sendQ, error(nil)
	if q < 0 {
		q, err = sendQueue(l.conn)
	}
	switch {
	case err != nil:
		x.queueStuck(l)
	case q == 0:
		x.safeRST(l)
	default:
		l.sendQ = q // pollQueue tells the peer's progress from it
		l.startPolling(phaseResetting, wait)
	}
}

// queueStuck: a reset's wait for the peer's acknowledgements ended with
// some missing. A safe reset falls back as the policy says; a reset that
// was due anyway goes now, and the stream toward the peer was cut.
func (x *executor) queueStuck(l *leg) {
	if l.due != dueNone {
		x.rst(l, l.due.reason(), true)
		return
	}
	x.decide(l, policy.QueueStuck)
}

// reason is what the record says of a due reset.
func (d dueReset) reason() policy.Reason {
	if d == dueCut {
		return policy.ReasonCut
	}
	return policy.ReasonLateData
}

// safeRST is the safe reset itself. A leg whose peer never sent its FIN
// (a grace of silence passed) counts its peer's stream as ended.
func (x *executor) safeRST(l *leg) {
	if l.due != dueNone { // a reset due anyway, once what was sent arrived
		// Late data's leg had its whole stream unless its end was still
		// to come; the other peer's reset cut it unless its FIN had gone
		// (the stream ended in order before the reset, and all of it
		// arrived).
		x.rst(l, l.due.reason(), !l.sendDone || l.due == dueCut && !l.finSent)
		return
	}
	if l.target != policy.TargetNowhere {
		if in, _ := l.beforeFIN(); in {
			// A grace's end chose the fallback's reset, and the peer's
			// FIN came while it waited for the peer's acknowledgements
			// (read, or in the kernel behind bytes not read yet): its
			// close decides, as within the grace, and the FIN goes
			// second (TIME-WAIT on the peer), no reset.
			x.decide(l, policy.PeerFIN)
			return
		}
	}
	if !l.inDone {
		l.bet = true
	}
	x.rst(l, "", false)
}

// rst closes l with an RST now; cut says the stream toward its peer was
// cut short. A socket the kernel already closed has no RST left to send:
// the peer's RST (or, on a leg whose FIN went, the peer's FIN) may have
// come after the proxy's last look at the socket, so rst looks once more
// (one TCP_INFO), and the record says the peer's reset, or the FINs that
// went both ways, and not a reset the proxy never sent.
func (x *executor) rst(l *leg, why policy.Reason, cut bool) {
	if rstHook != nil {
		rstHook(l, false)
	}
	switch closed, reset := l.closedBy(); {
	case reset: // the peer's, as the record and the outcome say
		x.closeReset(l)
		return
	case closed: // the FINs went both ways: nothing left to reset
		x.rec.finIn(l.name)
		l.atPeerFIN()
		x.finish(l)
		return
	}
	// Whether the proxy's FIN was acknowledged and the peer's not in,
	// read now: should the peer's come before the close, the FINs'
	// order is this.
	acked := l.finSent && l.tcp().finAcked()
	if rstLookedHook != nil {
		rstLookedHook(l)
	}
	_ = l.conn.SetLinger(0)
	// A refusal comes before any byte of the other side's: as Refuse
	// records it, nothing was cut.
	cut = cut && why != policy.ReasonRefused
	var unacked int64
	if cut {
		unacked = l.unacked() // the reset throws them away
	}
	finSent := l.finSent
	l.closeSocket()
	if finSent && x.metByFIN(l) {
		// The peer's FIN came after the look: the kernel had closed the
		// socket into TIME-WAIT, and the close sent nothing. The FINs
		// went both ways, the proxy's first where it was acknowledged
		// before the peer's came (else they may have crossed: unknown),
		// and the late bytes were lost all the same.
		first := policy.SideUnknown
		if acked {
			first = policy.SideProxy
		}
		x.rec.finIn(l.name)
		x.rec.Note(l.name, why)
		x.rec.firstFIN(l.name, first)
		x.rec.closed(l.name, policy.CloseFIN)
	} else {
		x.rec.reset(l.name, why, cut)
		x.rec.discarded(l.name, unacked)
	}
	if rstHook != nil {
		rstHook(l, true)
	}
}

// metByFIN reports whether leg l, whose FIN had gone and which rst just
// closed with a linger of 0, sits in TIME-WAIT in the kernel: the peer's
// FIN came between rst's look and its close, which then sent no RST. One
// sock_diag lookup by 4-tuple, on this path only (a reset after the
// proxy's FIN: late data, half_close_timeout, a cut at shutdown).
func (x *executor) metByFIN(l *leg) bool {
	lr := x.rec.td.Leg(l.name)
	if !lr.Local.IsValid() || !lr.Peer.IsValid() {
		return false
	}
	s, ok, err := sockdiag.Find(lr.Local, lr.Peer)
	return err == nil && ok && s.State == sockdiag.TimeWait
}

// shutdownHook, when set (tests), is called as fin shuts the leg's
// sending side down.
var shutdownHook func(policy.Leg)

// rstHook, when set (tests), is called as rst begins (sent false) and
// after the close that sends the RST the record claims (sent true).
var rstHook func(l *leg, sent bool)

// rstLookedHook, when set (tests), is called by rst after it looked
// whether the kernel closed the leg, before it resets.
var rstLookedHook func(l *leg)
