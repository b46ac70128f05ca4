package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

var errHalfClose = errors.New("half_close_timeout: the peer never sent its FIN after the proxy's")

// ackDelay is how long the ACK of a peer's FIN may wait for the proxy's
// own FIN to carry it: half the kernel's shortest delayed ACK (40 ms).
// Most FINs follow sooner and cost no system call; see ackNow for why a
// later one must not race the delayed ACK.
const ackDelay = 20 * time.Millisecond

// ackFIN acknowledges l's peer's FIN at once: a variable, so that a test
// can see when it does.
var ackFIN = func(l *leg) { ackNow(l.conn) }

// onTimer handles the timer: a leg's wait looks again, the ACK of a
// peer's FIN is due, or it is time to see whether the session is idle.
func (x *executor) onTimer(now time.Time) {
	for _, l := range x.legs {
		if l.open() && !l.ackAt.IsZero() && !now.Before(l.ackAt) {
			l.ackAt = time.Time{}
			ackFIN(l)
		}
		if l.open() && !l.at.IsZero() && !now.Before(l.at) {
			x.look(l, now)
		}
	}
	if !x.stopAt.IsZero() && !now.Before(x.stopAt) {
		x.stopAt = time.Time{}
		x.cutAll(OutcomeDrained, errDrained)
	}
	if !x.idleAt.IsZero() && !now.Before(x.idleAt) {
		x.lookIdle(now)
	}
}

// look is one look of a leg's wait.
func (x *executor) look(l *leg, now time.Time) {
	l.at = time.Time{}
	switch l.phase {
	case phaseWithholding:
		switch {
		case l.probe && !now.Before(l.quiet.Add(l.budget)):
			x.decide(l, policy.ProbeExpired)
		case l.probe:
			l.at = l.quiet.Add(l.budget)
		case x.silent(l, now):
			x.decide(l, policy.GraceExpired)
		}
	case phaseFINSent:
		if l.act.watch.Load() {
			l.lookForFinWait2()
		}
		if !l.finGone {
			// half_close_timeout counts the peer's silence from when the
			// proxy's FIN has gone: once the peer acknowledged every byte
			// before it. A peer still reading them, or pausing (the
			// proxy's backpressure, rule 2), has not been sent the FIN
			// yet, and idle_timeout bounds one that takes none. Each look
			// until then reads the queue; the first to find it drained
			// starts the count, so the timeout ends between T and T plus
			// one look's interval after the peer took the last byte.
			l.finGone = l.unacked() == 0
			l.quiet = now
		}
		if x.silent(l, now) {
			x.decide(l, policy.HalfCloseExpired)
			return
		}
		l.at = l.nextWatch(now)
	case phaseOpen:
		x.lookForRefusal(l, now)
	case phaseResetting:
		x.pollQueue(l, now)
	case phaseAnswering:
		x.pollAnswer(l, now)
	}
}

// silent reports, at a look of a wait, whether l's peer stayed silent for
// the wait's whole budget, and arms the next look otherwise. Bytes read
// from the peer, and bytes of its that wait in the proxy because the other
// side does not take them, are not silence (rule 2); nor, once the budget
// ran out, are bytes of its that wait in the kernel behind a segment lost
// on the way (heldInKernel: a peer whose stream is being repaired by a
// retransmission was not silent, only its bytes were late). One reading,
// only when the wait would end.
func (x *executor) silent(l *leg, now time.Time) bool {
	in := l.act.lastIn.Load()
	if in != l.mark || x.backlogged(l) {
		l.mark, l.quiet = in, now
	}
	if now.Sub(l.quiet) >= l.budget {
		if held, err := heldInKernel(l.conn); err != nil || held == 0 {
			return true
		}
		l.quiet = now
	}
	l.at = now.Add(tick(l.budget))
	return false
}

// pollQueue looks whether a safe reset's send queue drained. A peer that
// reset meanwhile acknowledges nothing more, and the kernel keeps counting
// what it did not acknowledge: its reset ends the wait, not the wait's
// end (nor is a reset of the proxy's recorded that the kernel never sent).
//
// A reset due anyway (late data, the other peer's reset) destroys what
// the peer has not acknowledged when it goes: a peer that takes what it
// was sent (its queue shrank since the last look) is reading, not
// stalled, and the wait counts drain_timeout from its latest progress
// (rule 2: a timer counts silence, never a transfer under way). An http1
// client reading the last responses of a connection, with a request
// pipelined behind them, gets them whole however slowly it reads, and
// one that pauses gets them whole if it reads on within pauseBound; so
// does a client paused behind an answer its backend reset after.
func (x *executor) pollQueue(l *leg, now time.Time) {
	q, err := sendQueue(l.conn)
	switch {
	case err == nil && q == 0:
		x.safeRST(l)
	case l.resetByPeer():
		x.peerReset(l)
	case err != nil || !l.followReader(now, q, l.due != dueNone, x.pauseBound(l)):
		x.queueStuck(l)
	}
}

// followReader takes one look of a polled wait on l's peer taking what it
// was sent, q its send queue now. With follow, a queue that shrank since
// the last look is a peer reading, and the wait counts drain_timeout from
// that progress (rule 2: a timer counts silence, never a transfer under
// way). A peer that took nothing for drain_timeout, with a pause bound
// longer than that, is a reader that paused, as far as anyone can tell:
// the wait holds on up to pause from its latest progress, looked at a
// quarter drain_timeout apart; progress brings the quick looks back. It
// reports whether the wait goes on (its next look armed); once it ran
// out, l.paused says whether on a paused reader.
func (l *leg) followReader(now time.Time, q int, follow bool, pause time.Duration) bool {
	drain := l.pol.DrainTimeout
	switch {
	case follow && l.sendQ >= 0 && q < l.sendQ:
		l.until, l.paused = now.Add(drain), false
	case now.Before(l.until):
	case !l.paused && pause > drain:
		l.paused, l.until = true, now.Add(pause-drain)
	default:
		return false
	}
	l.sendQ = q
	if l.paused {
		l.at = now.Add(tick(drain))
	} else {
		l.pollAgain(now)
	}
	return true
}

// pauseBound is how long a due reset (late data's, or the one that
// passes on the other peer's) waits for a peer that takes none of what it
// was sent, from its latest progress: idle_timeout, which bounds a paused
// reader everywhere else (a session without one, only in tests, waits
// drain_timeout).
func (x *executor) pauseBound(l *leg) time.Duration {
	if l.due == dueNone {
		return 0
	}
	return x.s.Idle
}

// next returns when the earliest look is due; zero: none is.
func (x *executor) next() time.Time {
	at := x.idleAt
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	for _, l := range x.legs {
		if l.open() {
			earliest(l.at)
			earliest(l.ackAt)
		}
	}
	earliest(x.stopAt)
	return at
}

// armIdle starts idle detection: the timer looks every idle_timeout/4
// whether bytes moved, so silence is measured to within a quarter. The
// kernel's counts are first read at the first look, so that a short
// session reads none: until then the legs' read and write stamps tell
// whether bytes moved, as no byte reaches those counts but through a
// copier (a blocked copier has read or written before it blocked).
func (x *executor) armIdle(now time.Time) {
	if x.s.Idle <= 0 {
		return
	}
	x.idleAt = now.Add(tick(x.s.Idle))
	x.idleMark, x.idleQuiet, x.idleFirst = x.stamps(), now, true
}

// lookIdle cuts the session when no byte moved for idle_timeout: what was
// still flowing was cut (rule 4), on both legs at once (rule 5).
func (x *executor) lookIdle(now time.Time) {
	if x.idleFirst {
		if x.stamps() != x.idleMark {
			x.idleQuiet = now
		}
		x.idleMark, x.idleFirst = x.progress(), false
	} else if p := x.progress(); p != x.idleMark {
		x.idleMark, x.idleQuiet = p, now
	}
	if now.Sub(x.idleQuiet) >= x.s.Idle {
		x.cutAll(OutcomeTimeout, fmt.Errorf("idle_timeout: no bytes moved for %s", x.s.Idle))
		return
	}
	x.idleAt = now.Add(tick(x.s.Idle))
}

// stamps changes whenever a copier reads or writes.
func (x *executor) stamps() uint64 {
	var p uint64
	for _, l := range x.legs {
		p += uint64(l.act.lastIn.Load() + l.act.lastOut.Load())
	}
	return p
}

// progress grows whenever bytes move: kernel counts on each open leg (bytes
// received or acknowledged, even while a copier is blocked) and the
// copiers' own.
func (x *executor) progress() uint64 {
	var p uint64
	for _, l := range x.legs {
		if l.open() {
			p += l.tcp().progress()
		}
	}
	return p + x.stamps()
}

// onDrain: shutdown_timeout ran out. Streams still flowing both ways are
// cut; a withheld FIN whose peer is quiet takes its fallback now; what
// else waits gets DrainGrace, then is cut.
func (x *executor) onDrain(now time.Time) {
	x.draining = true
	open := 0
	for _, d := range x.dirs {
		if !d.done {
			open++
		}
	}
	if open > 1 {
		x.cutAll(OutcomeDrained, errDrained)
		return
	}
	for _, l := range x.legs {
		if l.open() && l.phase == phaseWithholding && !x.active(l, now) {
			x.decide(l, policy.Drain)
		}
	}
	if x.anyOpen() {
		x.stopAt = now.Add(DrainGrace)
	}
}

// active reports that l's peer sent bytes within its wait's budget, or
// that its bytes wait in the proxy.
func (x *executor) active(l *leg, now time.Time) bool {
	if in := l.act.lastIn.Load(); in != l.mark {
		l.mark, l.quiet = in, now
	}
	return x.backlogged(l) || now.Sub(l.quiet) < l.budget/4
}
