package engine

import (
	"net"
	"runtime"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// phase is where a leg stands in its close.
type phase uint8

const (
	phaseOpen         phase = iota // relaying
	phaseWithholding               // FIN withheld: waiting for the peer's within the grace
	phaseFINSent                   // our FIN is out: waiting for the peer's
	phaseResetPending              // a safe reset is due once the peer's stream is read to its end
	phaseResetting                 // a safe reset waits for the send queue to drain
	phaseAnswering                 // both FINs went, ours second: waiting for the peer's ACK or RST (mayRefuse)
	phaseClosed                    // socket closed
)

// leg is one TCP connection of a session and the facts about its close.
// The executor's goroutine owns everything but act, which the copiers
// write.
type leg struct {
	name   policy.Leg
	conn   sock
	tc     *net.TCPConn  // conn, when the session runs on goroutines: the copiers' socket
	pol    *config.Close // the Session's Front or Back
	target policy.Target // in force: the configured one, or what auto chose at the first decision
	rec    *Recorder
	info   infoReader
	act    activity
	// readBase, when readKnown: what had been read off the socket when
	// its copier started, in readSoFar's terms (the back leg of a
	// session on goroutines; see executor.resetReadAsEOF).
	readBase uint64
	phase    phase
	between  bool // Ending.Between: a reset of the peer's cut nothing if it left nothing unacknowledged (beside phase: the flags below fill their words)
	// finAt is when the peer's FIN was read by its copier (nanoseconds since the
	// session's start); finAckedAll, that every byte the proxy had sent it
	// by then was acknowledged: a FIN after the whole stream, a peer done
	// with it (read at the peer's FIN only where doneAsked, or before the
	// proxy's FIN when the kernel already held the peer's: beforeFIN).
	finAt   int64
	release func()  // ends Session.Hold's count of this leg, once the session ended
	unplace func()  // ends Session.Placing's count of this leg, once the session ended
	fo      *finObs // from the proxy's first look before its FIN (nil until then: an idle leg does not carry it)
	// sendQ is the send queue (SIOCOUTQ) read for the decision being
	// carried out; -1: none was. The proxy writes nothing to the leg while
	// it decides, so the queue can only have shrunk since.
	sendQ int

	// A wait: the next look (at), how much silence it allows or until when
	// a queue may drain (budget, until), and when the peer was last seen
	// active (quiet, mark: lastIn at the last look).
	at, until time.Time
	budget    time.Duration
	quiet     time.Time
	mark      int64
	poll      time.Duration // a queue drain's next poll interval
	finTime   time.Time     // when the proxy's FIN went, for nextWatch
	// ackAt: the peer's FIN was read and the proxy's has not gone yet;
	// if it still has not by then, the ACK of the peer's goes at once
	// (ackNow), before the kernel's delayed ACK would.
	ackAt time.Time

	// The flags, together: an idle session holds its legs for hours, and
	// scattered among the words above they cost a size class each.
	readKnown bool
	// awaitsEOF: the caller knows the peer waits for EOF (http1: a
	// close-delimited response).
	awaitsEOF   bool
	mayEOF      bool // Ending.MayAwaitEOF
	sendDone    bool // the stream toward the peer ended, in order or cut
	inDone      bool // the stream from the peer ended: its FIN read, or a failure
	peerFIN     bool // the peer's FIN was read
	finAckedAll bool
	finSent     bool
	finGone     bool // the peer acknowledged every byte before the proxy's FIN: half_close_timeout counts from when a look saw it
	bet         bool // closed by a fallback reset after a grace of silence: its peer's stream counts as ended
	probe       bool // the withhold only asks whether a peer that may await EOF does (policy.Decision.Probe)
	foFresh     bool // fo was read for the decision being carried out
	asked       bool // doneAsked: set by addLeg
	peerRST     bool // the peer's RST was met while the stream from it was still being read
	paused      bool // a polled wait's peer took nothing for drain_timeout: a paused reader, waited for longer (followReader)
	// due: a reset that goes whatever comes, once the peer acknowledged
	// what it was sent (drain_timeout from its latest progress, and
	// pauseBound for a peer that paused), and why.
	due dueReset
}

// dueReset is why a leg is reset once its send queue drained: late data
// (policy.Reset with a Wait), or the other leg's peer reset while its
// bytes were on their way through the proxy.
type dueReset uint8

const (
	dueNone     dueReset = iota
	dueLateData          // the peer sent bytes that could no longer be delivered
	dueCut               // the other peer reset: what it sent first is delivered, then the reset
)

func newLeg(name policy.Leg, c sock, pol *config.Close, rec *Recorder) *leg {
	l := &leg{name: name, conn: c, pol: pol, target: pol.TimeWait, rec: rec, sendQ: -1}
	l.tc, _ = c.(*net.TCPConn)
	l.info.raw, _ = c.SyscallConn()
	return l
}

func (l *leg) open() bool { return l.phase != phaseClosed }

// doneReading reports that l's peer's FIN answered the end of the stream
// toward it: the peer had sent nothing since the proxy's last bytes
// before it (it was only receiving), acknowledged all of them by its FIN,
// and was sent nothing since. A client that closes once it has the whole
// answer does that; a peer that half-closes after sending, or before the
// stream toward it ended, may still read, and is not taken for done; nor
// is a peer whose FIN the kernel held before the proxy began its answer
// (act.finFirst), however late the copier read it.
func (l *leg) doneReading() bool {
	in, out := l.act.lastIn.Load(), l.act.lastOut.Load()
	return l.peerFIN && l.finAckedAll && out > 0 && in < out && out <= l.finAt && !l.act.finFirst.Load()
}

// mayRefuse says whether l's peer may answer the proxy's FIN, which went
// second, with an RST. A peer that closed its socket, not only its sending
// side, refuses whatever bytes reach it after its close (an answer to a
// client that hung up, the rest of an upload to a backend that answered
// early), and the proxy's FIN behind them; its FIN looks the same either
// way. It cannot once it acknowledged every byte sent to it: its FIN did
// (finAckedAll, read at the time) and none went after, or now the send
// queue holds no more than the proxy's FIN (a peer that closed
// acknowledges nothing more). One ioctl, unless finAckedAll answers.
func (l *leg) mayRefuse() bool {
	if l.finAckedAll && l.act.lastOut.Load() <= l.finAt {
		return false
	}
	q, err := sendQueue(l.conn)
	return err != nil || q > 1
}

// refusesNothing is mayRefuse's answer asked before the proxy's FIN goes
// second, from one TCP_INFO reading: the leg still in CLOSE-WAIT (a peer
// that reset after its FIN has closed the socket, which a shutdown
// reports and a close would not) and every byte sent on it acknowledged,
// so the FIN is all that follows them.
func (l *leg) refusesNothing() bool { return l.tcp().onlyFINOwed() }

// resetCuts says whether a reset of l now cuts the stream toward its
// peer short: its end not reached, or bytes sent on it that the peer has
// not acknowledged, which the reset discards (the send queue holds more
// than the proxy's FIN). A FIN sent before does not make such a stream
// whole. One ioctl once the stream ended.
func (l *leg) resetCuts() bool { return !l.sendDone || l.unacked() > 0 }

// unacked is how many bytes sent on l its peer has not acknowledged (the
// proxy's FIN not counted): what a reset now discards. 0 when it cannot
// be read.
func (l *leg) unacked() int64 {
	n, _ := l.unackedKnown()
	return n
}

// unackedKnown is unacked, and whether the send queue could be read.
func (l *leg) unackedKnown() (int64, bool) {
	q, err := sendQueue(l.conn)
	if l.finSent {
		q--
	}
	if err != nil || q < 0 {
		return 0, err == nil
	}
	return int64(q), true
}

// takeEnding sets l up as the caller that hands it over says (Session.End).
func (l *leg) takeEnding(e Ending) {
	l.awaitsEOF, l.mayEOF, l.between = e.AwaitsEOF, e.MayAwaitEOF, e.Between
	if e.PeerFIN {
		l.peerFIN, l.inDone = true, true
		l.rec.PeerFINAt(l.name, time.Now()) // unless the caller saw it come earlier
	}
}

// doneAsked says whether anything asks l.doneReading: only a back leg
// that may end by a bet does (graceOut, with target nowhere or auto or
// fallback reset, asks otherSideDone), and only of the front leg beside
// it. Only such a front leg pays for the readings doneReading rests on
// (finAckedAll's SIOCOUTQ, the answer turn's TCP_INFO): one that ends
// alone (http1 between exchanges) or beside a back leg that always ends
// by a FIN reads neither.
func (l *leg) doneAsked() bool { return l.asked }

// doneStillAsked says, at l's peer's FIN, whether a decision of the other
// leg may still ask l.doneReading, and so whether finAckedAll is worth its
// SIOCOUTQ. Not once that leg is closed, nor once its own peer's FIN is
// in: its SendDone then ends it second without asking (facts), and
// policy.Decide never withholds a FIN whose peer's came already, so no
// grace or drain of a withheld FIN asks either. That is the usual short
// tcp connection: the backend closes after its answer, the client after
// the proxy's FIN. Left unread, finAckedAll stays false (unless beforeFIN
// found the peer's FIN in and every byte acknowledged, which tells the
// same): no bet.
func (l *leg) doneStillAsked(x *executor) bool {
	o := l.other(x)
	return l.doneAsked() && o != nil && o.open() && !o.peerFIN
}

// mayBet says whether l may end by a fallback reset after a grace, or by
// a reset to leave no TIME-WAIT: the ends for which policy.Decide asks
// Facts.OtherSideDone.
func (l *leg) mayBet() bool {
	return l.pol.TimeWait == policy.TargetNowhere || l.pol.TimeWait == policy.TargetAuto ||
		l.pol.Fallback == policy.FallbackReset
}

// other returns the session's other leg, nil if it has one only.
func (l *leg) other(x *executor) *leg {
	for _, o := range x.legs {
		if o != l {
			return o
		}
	}
	return nil
}

// tcp reads the leg's TCP_INFO.
func (l *leg) tcp() tcpCounts { return l.info.read(l.conn) }

// arm starts a wait of budget on the leg: the first look a quarter of it
// from now.
func (l *leg) arm(now time.Time, budget time.Duration) {
	l.budget, l.quiet, l.mark = budget, now, l.act.lastIn.Load()
	l.at = now.Add(tick(budget))
}

// nextWatch is the next look of a leg whose FIN went first while its ACK is
// awaited: every few milliseconds for the first half second (a peer's
// delayed ACK comes within tens of milliseconds, its FIN often soon
// after), then less and less often, never later than the wait's own next
// look. Seeing FIN-WAIT-2 tells that the peer's FIN did not cross the
// proxy's.
func (l *leg) nextWatch(now time.Time) time.Time {
	if !l.act.watch.Load() {
		return l.at
	}
	every := watchFirst
	if since := now.Sub(l.finTime); since > watchFor {
		every = min(since/4, tick(l.budget))
	}
	if next := now.Add(every); next.Before(l.at) {
		return next
	}
	return l.at
}

// The looks for FIN-WAIT-2: every watchFirst for watchFor after the FIN.
const (
	watchFirst = 4 * time.Millisecond
	watchFor   = 500 * time.Millisecond
)

// startPolling starts a wait in phase p that only polling can end (a
// send queue draining, a peer's answer to the proxy's FIN), at most wait:
// the first look soon, the next ones further apart (pollAgain).
func (l *leg) startPolling(p phase, wait time.Duration) {
	now := time.Now()
	l.phase, l.until, l.poll, l.paused = p, now.Add(wait), firstPoll, false
	l.at = now.Add(l.poll)
	if pollingHook != nil {
		pollingHook(p)
	}
}

// pollingHook, when set (tests), is told of every polled wait that starts.
var pollingHook func(phase)

// pollAgain arms a polled wait's next look: twice as far off as the last,
// at most lastPoll.
func (l *leg) pollAgain(now time.Time) {
	l.poll = min(2*l.poll, lastPoll)
	l.at = now.Add(l.poll)
}

// A polled wait's first look and the longest between two.
const (
	firstPoll = 50 * time.Microsecond
	lastPoll  = 5 * time.Millisecond
)

// tick is how often a wait looks: a quarter of its budget, so silence is
// measured to within a quarter.
func tick(budget time.Duration) time.Duration { return max(budget/4, time.Millisecond) }

// closedBy reports whether the kernel closed l, and if so whether the
// peer's reset did. The kernel also closes a socket once FINs went both
// ways in order (TIME-WAIT, or LAST-ACK acknowledged) while the proxy had
// not read the peer's yet: on a leg whose FIN went, only a pending error
// (which this reads, and so clears), or a copier's read that took it,
// says it was a reset.
func (l *leg) closedBy() (closed, reset bool) {
	if !ResetByPeer(l.conn) {
		return false, false
	}
	if !l.finSent || l.act.readReset() || pendingError(l.conn) {
		return true, true
	}
	// A copier's read may have taken the reset's error and not noted it
	// yet: on a closed socket the read returns at once.
	for until := time.Now().Add(readSettle); l.act.inRead() && time.Now().Before(until); {
		runtime.Gosched()
	}
	return true, l.act.readReset()
}

// readSettle bounds closedBy's wait for a copier's read under way.
const readSettle = 100 * time.Millisecond

// resetByPeer reports that l's peer reset it.
func (l *leg) resetByPeer() bool {
	closed, reset := l.closedBy()
	return closed && reset
}

// closeSocket closes the socket: after a FIN exchange, or with the linger
// set by reset.
func (l *leg) closeSocket() {
	l.phase = phaseClosed
	l.at = time.Time{}
	_ = l.conn.Close()
}
