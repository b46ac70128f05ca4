package proxy

import (
	"errors"
	"net"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// direction names one of the two byte streams of a session.
type direction int

const (
	up   direction = iota // front → back: the client's bytes to the backend
	down                  // back → front: the backend's bytes to the client
)

// copyResult is what one relayCopy call of a direction ended with.
type copyResult struct {
	dir direction
	n   int64
	err error
}

// relay moves bytes both ways between the legs and carries out the close
// policy. One goroutine per direction copies (relayCopy: chunks, then
// splice on Linux) and reports once, when its direction ends; the goroutine that calls run
// owns all state, decides through policy.Decide and acts. Timers (idle,
// grace, half-close) are one time.Timer in that goroutine's select, re-armed
// when the state changes; when one fires, kernel counts (TCP_INFO) say
// whether bytes moved in the meantime, so the data path is never touched.
type relay struct {
	front     *leg
	back      *leg
	idle      time.Duration
	idleAt    time.Time // when to look whether anything moved; zero once ended
	idleMark  uint64    // progress when last seen moving
	idleQuiet time.Time // when bytes last moved
	timer     *time.Timer
	moved     uint64 // bytes copied so far, both ways
	running   int    // copiers still running
	results   chan copyResult
	drain     <-chan struct{} // closed: end by policy now
	kill      <-chan struct{} // closed: reset whatever is left
	draining  bool
	outcome   Outcome
	err       error
}

func newRelay(front, back *leg, idle time.Duration, drain, kill <-chan struct{}) *relay {
	return &relay{
		front: front, back: back, idle: idle, drain: drain, kill: kill,
		results: make(chan copyResult, 2),
		outcome: OutcomeOK,
	}
}

// run relays until both legs are closed and fills their records.
func (r *relay) run() {
	for _, l := range []*leg{r.front, r.back} {
		_ = l.conn.SetDeadline(time.Time{}) // timers live here, not on sockets
	}
	r.timer = time.NewTimer(r.idle)
	defer r.timer.Stop()
	r.armIdle(time.Now())
	r.running = 2
	go r.copyUp()
	go r.copyDown()
	for r.running > 0 {
		r.rearm()
		select {
		case res := <-r.results:
			r.handle(res)
		case now := <-r.timer.C:
			r.onTimer(now)
		case <-r.drain:
			r.drain = nil
			r.draining = true
			r.endByPolicy(OutcomeDrained, nil)
		case <-r.kill:
			r.kill = nil
			r.abort(OutcomeDrained, errors.New("still open after ending by policy at shutdown"))
		}
	}
	for _, l := range []*leg{r.front, r.back} {
		if l.phase != phaseClosed { // safety net: no reader is left to wait with
			l.reset("relay_ended")
		}
		l.finishRecord()
	}
}

// copyUp carries the client's bytes to the backend.
func (r *relay) copyUp() { r.copyLoop(up, r.back.conn, r.front.conn) }

// copyDown carries the backend's bytes to the client.
func (r *relay) copyDown() { r.copyLoop(down, r.front.conn, r.back.conn) }

func (r *relay) copyLoop(d direction, dst, src *net.TCPConn) {
	n, err := relayCopy(dst, src)
	r.results <- copyResult{dir: d, n: n, err: err}
}

func (r *relay) ends(d direction) (src, dst *leg) {
	if d == up {
		return r.front, r.back
	}
	return r.back, r.front
}

func (r *relay) handle(res copyResult) {
	src, dst := r.ends(res.dir)
	r.moved += uint64(res.n)
	src.rec.BytesIn += res.n
	dst.rec.BytesOut += res.n
	r.running--
	if res.err == nil {
		r.onPeerFIN(src)
	} else {
		r.onError(src, dst, res.err)
	}
	r.sendEnd(dst)
}

// onPeerFIN: the peer of l sent its FIN (we read EOF).
func (r *relay) onPeerFIN(l *leg) {
	l.peerFIN()
	switch l.phase {
	case phaseWithholding:
		r.act(l, policy.PeerFINAfterWithhold, "")
	case phaseFINSent:
		l.closeFIN() // our FIN was first: TIME-WAIT stays here
	}
}

// sendEnd: nothing more will be sent to l's peer. The leg ends peer-first if
// the peer's FIN came already, proxy-first otherwise.
func (r *relay) sendEnd(l *leg) {
	if l.sendDone || l.phase == phaseClosed {
		return
	}
	l.sendDone = true
	if l.readEOF {
		r.act(l, policy.PeerFirst, "")
		return
	}
	r.act(l, policy.ProxyFirst, "")
}

// act asks the policy what to do with l and does it. why, when set, is
// recorded as the reason the leg left the table's plain path.
func (r *relay) act(l *leg, kind policy.Kind, why string) {
	if why != "" && l.rec.Fallback == "" {
		l.rec.Fallback = why
	}
	switch l.decide(kind) {
	case policy.FINFirst:
		r.finFirst(l)
	case policy.WithholdFIN:
		l.phase = phaseWithholding
		l.waitSilence(time.Now(), l.pol.PeerFinGrace)
	case policy.FINSecond:
		l.closeFIN()
	case policy.SafeReset:
		r.safeReset(l)
	}
}

// finFirst sends the proxy's FIN and waits for the peer's, at most
// half_close_timeout (peer_fin_grace while draining).
func (r *relay) finFirst(l *leg) {
	if l.readEOF { // the peer's FIN is in: a FIN now is the second
		l.closeFIN()
		return
	}
	if err := l.sendFIN(); err != nil {
		r.fail(l, err)
		return
	}
	wait := l.pol.HalfCloseTimeout
	if r.draining {
		wait = min(wait, l.pol.PeerFinGrace)
	}
	l.wait(time.Now(), wait)
}

// safeReset resets l once its send queue drained; if it does not drain in
// drain_timeout, a FIN goes instead (first or second, as it falls).
func (r *relay) safeReset(l *leg) {
	if !l.safeReset() {
		r.finFirst(l)
	}
}

// fail ends l after a socket error that was not a reset by its peer.
func (r *relay) fail(l *leg, err error) {
	r.setOutcome(OutcomeError, err)
	l.fail()
}

// onTimer handles the timer: a grace or half-close wait ran out, or it is
// time to see whether the session is idle.
func (r *relay) onTimer(now time.Time) {
	for _, l := range []*leg{r.front, r.back} {
		if !l.waitAt.IsZero() && !now.Before(l.waitAt) {
			r.waitExpired(l, now)
		}
	}
	if !r.idleAt.IsZero() && !now.Before(r.idleAt) {
		if p := r.progress(); p != r.idleMark {
			r.idleMark, r.idleQuiet = p, now
		}
		if now.Sub(r.idleQuiet) >= r.idle {
			r.endByPolicy(OutcomeTimeout, errors.New("idle_timeout: no bytes moved"))
		} else {
			r.idleAt = now.Add(max(r.idle/4, time.Millisecond))
		}
	}
}

// rearm sets the timer to the earliest of the idle check and the legs'
// waits.
func (r *relay) rearm() {
	at := r.idleAt
	for _, l := range []*leg{r.front, r.back} {
		if !l.waitAt.IsZero() && (at.IsZero() || l.waitAt.Before(at)) {
			at = l.waitAt
		}
	}
	if at.IsZero() {
		at = time.Now().Add(time.Hour) // nothing to wait for; a copier will report
	}
	if !r.timer.Stop() {
		select {
		case <-r.timer.C:
		default:
		}
	}
	r.timer.Reset(time.Until(at))
}

// waitExpired: the peer of l did not send its FIN in time.
func (r *relay) waitExpired(l *leg, now time.Time) {
	switch l.phase {
	case phaseWithholding:
		if l.silent(now) {
			r.act(l, policy.GraceExpired, "grace_expired")
		}
	case phaseFINSent:
		l.rec.Fallback = "half_close_timeout"
		if !l.safeReset() { // not drained: our FIN is out already
			l.closeFIN()
		}
	}
}

// onError handles a copier that ended with an error other than EOF or a
// deadline.
func (r *relay) onError(src, dst *leg, err error) {
	switch {
	case src.phase == phaseClosed:
		// we closed src ourselves; its reader just noticed
	case resetByPeer(src.conn):
		r.peerReset(src)
	case resetByPeer(dst.conn):
		r.peerReset(dst)
	case dst.phase == phaseClosed || dst.finSent:
		// src's peer sent bytes that can no longer reach dst's peer: a
		// reset tells it they were lost, whatever the fallback
		r.setOutcome(OutcomeLateData, nil)
		src.rec.Fallback = "late_data"
		r.safeReset(src)
	default:
		r.fail(src, err)
		r.propagateReset(dst)
	}
}

// The errors of a session ended by a peer's RST, so that the record's
// error says what happened rather than nothing.
var (
	errClientRST  = errors.New("the client reset the connection (RST)")
	errBackendRST = errors.New("the backend reset the connection (RST)")
)

// peerReset: l's peer sent an RST. The other leg learns it by a safe reset.
func (r *relay) peerReset(l *leg) {
	if l.name == policy.Front {
		r.setOutcome(OutcomeClientReset, errClientRST)
	} else {
		r.setOutcome(OutcomeBackendReset, errBackendRST)
	}
	l.rec.Close = policy.ClosePeerReset
	l.close()
	r.propagateReset(r.other(l))
}

func (r *relay) propagateReset(l *leg) {
	if l.phase != phaseClosed {
		l.rec.Fallback = "peer_reset"
		r.safeReset(l)
	}
}

// endByPolicy ends the session proxy-first on every leg still sending:
// after an idle timeout, or when shutdown cuts it.
func (r *relay) endByPolicy(o Outcome, err error) {
	r.setOutcome(o, err)
	r.idleAt = time.Time{}
	for _, l := range []*leg{r.front, r.back} {
		r.sendEnd(l)
	}
}

// abort resets both legs at once: nothing can be delivered any more.
func (r *relay) abort(o Outcome, err error) {
	r.setOutcome(o, err)
	for _, l := range []*leg{r.front, r.back} {
		if l.phase != phaseClosed {
			l.reset(string(o))
		}
	}
}

func (r *relay) setOutcome(o Outcome, err error) {
	if r.outcome == OutcomeOK {
		r.outcome, r.err = o, err
	}
}

// armIdle starts idle detection: the timer looks every idle_timeout/4
// whether bytes moved, so silence is measured to within a quarter.
func (r *relay) armIdle(now time.Time) {
	r.idleAt = now.Add(max(r.idle/4, time.Millisecond))
	r.idleMark, r.idleQuiet = r.progress(), now
}

func (r *relay) progress() uint64 {
	return r.front.progress() + r.back.progress() + r.moved
}

func (r *relay) other(l *leg) *leg {
	if l == r.front {
		return r.back
	}
	return r.front
}
