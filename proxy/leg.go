package proxy

import (
	"net"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// legPhase is where a leg stands in its close.
type legPhase int

const (
	phaseOpen        legPhase = iota // relaying
	phaseWithholding                 // FIN withheld, waiting for the peer's within peer_fin_grace
	phaseFINSent                     // our FIN went first, waiting for the peer's
	phaseClosed                      // socket closed
)

// leg is one TCP connection of a session and the facts about its close.
type leg struct {
	name      policy.Leg
	start     time.Time  // the session's accept: records count from it
	auto      *autoWatch // resolves time_wait = "auto"; nil when unused
	conn      *net.TCPConn
	pol       config.Close
	rec       *LegRecord
	phase     legPhase
	readEOF   bool          // the peer's FIN was read
	sendDone  bool          // nothing more will be sent to the peer
	finSent   bool          // our FIN went out
	waitAt    time.Time     // end of a grace or half-close wait; zero if none
	waitMark  uint64        // progress when the wait was armed, or last seen moving
	silence   time.Duration // a silence wait: how long the peer must stay silent
	waitSince time.Time     // a silence wait: when it began
	quiet     time.Time     // a silence wait: when bytes last moved
	lastProg  uint64
	info      infoReader // the socket's TCP_INFO
}

// wait arms a wait of d on the leg (a half-close: d in all).
func (l *leg) wait(now time.Time, d time.Duration) {
	l.waitAt = now.Add(d)
	l.waitMark = l.progress()
}

// waitSilence arms a wait for d of silence: the timer looks every d/4
// whether bytes moved, so silence is measured to within a quarter of d.
func (l *leg) waitSilence(now time.Time, d time.Duration) {
	l.silence, l.waitSince, l.quiet = d, now, now
	l.waitMark = l.progress()
	l.waitAt = now.Add(max(d/4, time.Millisecond))
}

// silent reports, at a tick of a silence wait, whether the peer stayed
// silent for the whole wait, and re-arms the next tick otherwise. A backend
// that has not yet answered at all is not silent, only slow (a client that
// half-closed after its request is still owed the response): it is given
// up to half_close_timeout from the start of the wait. On the front leg the
// client owes nothing: silence is silence.
func (l *leg) silent(now time.Time) bool {
	if p := l.progress(); p != l.waitMark {
		l.waitMark, l.quiet = p, now
	}
	owes := l.name == policy.Back && l.info.awaitingReply(l.conn) && now.Sub(l.waitSince) < l.pol.HalfCloseTimeout
	if !owes && now.Sub(l.quiet) >= l.silence {
		return true
	}
	l.waitAt = now.Add(max(l.silence/4, time.Millisecond))
	return false
}

func (l *leg) progress() uint64 {
	if l.phase != phaseClosed {
		l.lastProg = l.info.progress(l.conn)
	}
	return l.lastProg
}

func (l *leg) close() {
	l.progress()
	l.phase = phaseClosed
	l.waitAt = time.Time{}
	_ = l.conn.Close()
}

// finishRecord derives where TIME-WAIT landed from how the leg closed.
func (l *leg) finishRecord() {
	if l.rec.Close == policy.CloseNone {
		l.rec.Close = policy.CloseError // closed on a path that did not say how
	}
	l.rec.TimeWait = policy.TimeWait(l.rec.FirstFIN, l.rec.Close, l.readEOF && l.finSent)
}

func (l *leg) since() time.Duration { return time.Since(l.start) }

// decide asks the policy what to do on l for kind, resolving "auto" from
// the live figures first; the record keeps auto's reason.
func (l *leg) decide(kind policy.Kind) policy.Action {
	target := l.pol.TimeWait
	if target == policy.TargetAuto {
		var s policy.AutoState
		if l.auto != nil {
			s = l.auto.state(l.rec.Peer)
		}
		target, l.rec.AutoReason = policy.Resolve(l.name, kind, s)
	}
	return policy.Decide(policy.Event{Leg: l.name, Target: target, Fallback: l.pol.Fallback, Kind: kind})
}

// peerFIN notes that the peer's FIN was read.
func (l *leg) peerFIN() {
	l.readEOF = true
	l.rec.FINIn = l.since()
	if !l.finSent {
		l.rec.FirstFIN = l.name.Peer()
	}
}

// sendFIN shuts down writing: the proxy's FIN, first since the peer's has
// not come.
func (l *leg) sendFIN() error {
	if err := l.conn.CloseWrite(); err != nil {
		return err
	}
	l.finSent = true
	l.rec.FINOut = l.since()
	l.rec.FirstFIN = policy.SideProxy
	l.phase = phaseFINSent
	return nil
}

// closeFIN closes l with a FIN; the peer's FIN came first, or ours went
// already.
func (l *leg) closeFIN() {
	if !l.finSent {
		l.finSent = true
		l.rec.FINOut = l.since()
	}
	l.rec.Close = policy.CloseFIN
	l.close()
}

// safeReset closes l with an RST once every byte sent on it is
// acknowledged. If the send queue does not drain within drain_timeout it
// leaves l open, records why and returns false: the caller sends a FIN
// instead, never destroying undelivered bytes. Polling SIOCOUTQ is the only
// way to see the queue empty; the poll is bounded by drain_timeout.
func (l *leg) safeReset() bool {
	deadline := time.Now().Add(l.pol.DrainTimeout)
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		queued, err := sendQueue(l.conn)
		if err == nil && queued == 0 {
			l.reset("")
			return true
		}
		if err != nil || !time.Now().Before(deadline) {
			l.rec.Fallback = "drain_timeout"
			return false
		}
		time.Sleep(pause)
	}
}

// reset closes l with an RST at once.
func (l *leg) reset(why string) {
	if why != "" && l.rec.Fallback == "" {
		l.rec.Fallback = why
	}
	_ = l.conn.SetLinger(0)
	l.rec.RSTOut = l.since()
	l.rec.Close = policy.CloseReset
	l.close()
}

// fail closes l after a socket error that was not a reset by its peer.
func (l *leg) fail() {
	_ = l.conn.SetLinger(0)
	l.rec.Close = policy.CloseError
	l.close()
}
