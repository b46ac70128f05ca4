package engine

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// executor carries out the close policy on a session's legs: the one
// executor for relayed sessions, tunnels and the legs http1 ends alone.
// One goroutine per direction copies (relayCopy, or a sink for late data)
// and reports once, when its direction ends; the goroutine that calls run
// owns every other piece of state, asks policy.Decide and acts. Timers
// (idle, grace, half-close, a safe reset's queue) are one time.Timer in
// run's select, re-armed when the state changes.
type executor struct {
	s       *Session
	rec     *Recorder
	start   time.Time
	legs    []*leg
	dirs    []*dir
	results chan result // the copiers' reports, on goroutines
	running int         // directions that have not reported
	drain   <-chan struct{}
	kill    <-chan struct{}
	stopAt  time.Time // draining: cut whatever still waits at this time

	idleAt    time.Time // next idle look; zero: no idle detection
	idleMark  uint64
	idleQuiet time.Time
	idleFirst bool // the first look is still to come: idleMark holds stamps
	draining  bool
}

// dir is one direction: bytes from src's peer to dst's peer, or to nowhere
// (dst nil: a sink, for late data).
type dir struct {
	src, dst *leg
	flow     flow
	done     bool // its copier reported
	clean    bool // it ended by its source's FIN, or by a grace's bet on a silent source
}

type result struct {
	d   *dir
	n   int64
	err error
}

// errLate: a sink read a byte.
var errLate = errors.New("late data")

// writeError marks a copier's error as its destination's: writing (or
// splicing out) failed, not reading its source. Which leg failed decides
// whose reset the record names: the kernel's state alone cannot tell, as
// a leg whose FINs went both ways in order is closed too.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// writing reports that err came from writing to a copier's destination.
func writing(err error) bool {
	var w writeError
	return errors.As(err, &w)
}

// The errors of sessions cut by a peer or a timer, so that the record's
// error says what happened.
var (
	errClientRST = errors.New("the client reset the connection (RST)")
	errBackRST   = errors.New("the backend reset the connection (RST)")
	errDrained   = errors.New("cut by shutdown: still open when its wait ended (shutdown_timeout, or a second SIGTERM)")
	errKilled    = errors.New("still open after ending by policy at shutdown")
)

func newExecutor(s *Session) *executor {
	if s.Tunnel {
		s.Back.Fallback = policy.FallbackFIN // no bet in a tunnel
	}
	return &executor{s: s, rec: s.Rec, start: s.Rec.Start(), drain: s.Drain, kill: s.Kill}
}

func (x *executor) addLeg(name policy.Leg, c sock) *leg {
	pol := &x.s.Front
	if name == policy.Back {
		pol = &x.s.Back
	}
	l := newLeg(name, c, pol, x.rec)
	x.legs = append(x.legs, l)
	if o := l.other(x); o != nil { // both legs known: the front's doneAsked
		front, back := o, l
		if name == policy.Front {
			front, back = l, o
		}
		front.asked = back.mayBet() && !x.s.Tunnel
	}
	return l
}

func (x *executor) addDir(src, dst *leg) {
	d := &dir{src: src, dst: dst}
	d.flow = flow{start: x.start, src: &src.act, srcLeg: src}
	if dst != nil {
		d.flow.dst, d.flow.dstLeg = &dst.act, dst
	}
	x.dirs = append(x.dirs, d)
}

// prime writes pending payload to l before the relay starts, stamped as the
// copiers stamp theirs (rule 1 must know the peer got bytes).
func (x *executor) prime(l *leg, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	d := x.from(l.other(x))
	d.flow.writing()
	n, err := l.tc.Write(b)
	d.flow.wrote()
	x.rec.Relayed(l.name == policy.Back, int64(n))
	switch {
	case err == nil:
		return true
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		x.closeReset(l) // the peer's reset, as a copier's read records it
	default:
		x.rec.Outcome(OutcomeError, fmt.Errorf("write to the %s: %w", l.name.Peer(), err))
	}
	return false
}

// run starts the copiers, calls first (if any) and handles events until
// every leg is closed and every copier ended.
func (x *executor) run(first func()) {
	for _, l := range x.legs {
		_ = l.conn.SetDeadline(time.Time{}) // timers live here, not on sockets
	}
	x.results = make(chan result, len(x.dirs))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer x.releaseHolds()
	for _, d := range x.dirs {
		x.running++
		x.startCopier(d)
	}
	if first != nil {
		first()
	}
	for !x.finished() {
		at := x.next()
		if at.IsZero() {
			at = time.Now().Add(time.Hour) // nothing to wait for; a copier will report
		}
		timer.Reset(time.Until(at))
		select {
		case r := <-x.results:
			x.onResult(r)
		case now := <-timer.C:
			x.onTimer(now)
		case <-x.drain:
			x.drain = nil
			x.onDrain(time.Now())
		case <-x.kill:
			x.kill = nil
			x.onKill()
		}
	}
}

// finished reports that every leg is closed and every direction reported:
// the session is over. Whoever drives the executor (run's goroutine, or a
// loop) calls it after each event.
func (x *executor) finished() bool { return x.running == 0 && !x.anyOpen() }

// onKill: ending by policy at shutdown took too long; what is left is
// reset.
func (x *executor) onKill() { x.cutAll(OutcomeDrained, errKilled) }

// releaseHolds ends Session.Hold's and Session.Placing's counts once the
// sockets are closed.
func (x *executor) releaseHolds() {
	for _, l := range x.legs {
		callOnce(&l.release)
		callOnce(&l.unplace)
	}
}

// callOnce calls *f, if set, and clears it.
func callOnce(f *func()) {
	if *f != nil {
		(*f)()
		*f = nil
	}
}

// startCopier runs d's copier on a goroutine named for its direction, so
// that a stack dump says which direction hung.
func (x *executor) startCopier(d *dir) {
	switch {
	case d.dst == nil:
		go x.sinkLate(d)
	case d.src.name == policy.Front:
		go x.copyUp(d)
	default:
		go x.copyDown(d)
	}
}

// copyUp carries the client's bytes to the backend.
func (x *executor) copyUp(d *dir) {
	n, err := relayCopy(d.dst.tc, d.src.tc, &d.flow)
	x.results <- result{d, n, err}
}

// copyDown carries the backend's bytes to the client.
func (x *executor) copyDown(d *dir) {
	n, err := relayCopy(d.dst.tc, d.src.tc, &d.flow)
	x.results <- result{d, n, err}
}

// sinkLate waits for what the peer of a leg with nowhere to send its bytes
// still sends: EOF, or late data at the first byte.
func (x *executor) sinkLate(d *dir) {
	var buf [512]byte
	n, err := d.src.tc.Read(buf[:])
	switch {
	case n > 0:
		err = errLate
	case errors.Is(err, io.EOF):
		err = nil
	case err == nil:
		err = errLate // a zero-byte read that is not EOF cannot happen on TCP
	}
	x.results <- result{d, int64(n), err}
}

func (x *executor) anyOpen() bool {
	for _, l := range x.legs {
		if l.open() {
			return true
		}
	}
	return false
}

// onResult handles a direction whose copier ended.
func (x *executor) onResult(r result) {
	d := r.d
	d.done = true
	x.running--
	if d.dst != nil {
		x.rec.Relayed(d.src.name == policy.Front, r.n)
	} else {
		x.rec.Received(d.src.name, r.n)
	}
	switch {
	case r.err == nil && d.dst != nil && (d.src.peerRST || x.resetReadAsEOF(d.src, r.n)):
		x.peerReset(d.src)
	case r.err == nil:
		x.peerFIN(d)
	case errors.Is(r.err, errLate):
		if d.src.open() {
			x.lateData(d.src)
		}
	default:
		x.failed(d, r.err)
	}
}

// resetReadAsEOF tells an EOF that was the peer's reset: a write to the
// peer that met the RST first took the socket's error, and a read after
// it says EOF (the copiers on goroutines race so). Passing that EOF on
// as a FIN would show the other peer a cut stream as whole: an aborted
// upload to the backend, a truncated answer to the client. n is what the
// reading copier read.
//
// The client's: the kernel closed the socket (CLOSE) where a FIN alone
// leaves it in CLOSE-WAIT. A client that sent a FIN and then a reset
// reads the same: its stream was whole, and the backend gets a reset in
// place of the FIN, as it would once the reset is read.
//
// The backend's: CLOSE is not enough, for a FIN and then a reset (an
// early answer, then a close with the rest of the request unread) is
// common, and the answer queued toward the client must not be cut. The
// kernel counts a FIN received as one byte: a socket that received no
// more than what was read off it had no FIN.
func (x *executor) resetReadAsEOF(l *leg, n int64) bool {
	switch {
	case l.finSent:
		return false
	case l.name == policy.Front:
		return ResetByPeer(l.conn)
	default:
		return l.readKnown && resetWithoutFIN(l.conn, l.readBase+uint64(n))
	}
}

// peerFIN: the peer of d's source sent its FIN and every byte before it
// went on.
func (x *executor) peerFIN(d *dir) {
	src := d.src
	d.clean = true
	src.inDone, src.peerFIN = true, true
	src.finAt = d.flow.eofAt
	if src.finAt == 0 {
		src.finAt = int64(time.Since(x.start))
	}
	if src.doneStillAsked(x) {
		q, err := sendQueue(src.conn)
		src.finAckedAll = err == nil && q == 0
	}
	x.rec.finIn(src.name)
	if src.finSent {
		src.atPeerFIN()
	}
	switch src.phase {
	case phaseFINSent, phaseWithholding:
		x.decide(src, policy.PeerFIN)
	case phaseResetPending:
		x.startQueueDrain(src, src.budget)
	}
	if d.dst != nil {
		x.sendDone(d.dst)
	}
	if src.open() && !src.finSent {
		now := time.Now()
		src.ackAt = now.Add(ackDelay)
		if src.phase == phaseOpen {
			src.at = now.Add(tick(src.pol.DrainTimeout)) // lookForRefusal
		}
	}
}

// lookForRefusal looks, while the stream toward l goes on after its
// peer's FIN, whether the peer refused what came after (it had closed its
// socket, not only its sending side: its kernel answers such bytes with
// an RST). Nothing else would read l again, and the peer that sent those
// bytes, waiting for an answer, would learn of their loss only at its
// own leg's half_close_timeout. One TCP_INFO reading a quarter of
// drain_timeout, only once bytes went after the peer's FIN.
func (x *executor) lookForRefusal(l *leg, now time.Time) {
	if !l.peerFIN || l.finSent || l.sendDone {
		return // the proxy's FIN ends the watch: its answer (finish) tells
	}
	if l.act.lastOut.Load() > l.finAt && l.resetByPeer() {
		x.peerReset(l)
		return
	}
	l.at = now.Add(tick(l.pol.DrainTimeout))
}

// sendDone: the stream toward l's peer ended in order; the policy says how
// l ends.
func (x *executor) sendDone(l *leg) {
	if !l.open() || l.sendDone {
		return
	}
	l.sendDone = true
	x.decide(l, policy.SendDone)
}

// failed handles a copier that ended with an error: a socket the proxy
// closed itself, a peer's reset, or another failure. The leg the failing
// call was on (failing) is looked at first, then the other: a reset is
// the call's ECONNRESET, or (taken by an earlier call) a socket the
// kernel closed.
func (x *executor) failed(d *dir, err error) {
	src, dst := d.src, d.dst
	failing, other := src, dst
	if writing(err) && dst != nil {
		failing, other = dst, src
	}
	if !src.open() && src.bet { // reset after a grace of silence: its stream counts as ended
		d.clean = true
	}
	reset := func(l *leg) bool { return errors.Is(err, syscall.ECONNRESET) || l.resetByPeer() }
	switch {
	case failing == dst && dst.open() && reset(dst):
		x.peerReset(dst) // whatever else happened, dst was reset; the write took its error
	case !src.open():
		if src.bet && dst != nil {
			x.sendDone(dst)
		}
	case failing == src && (src.peerRST || reset(src)):
		x.peerReset(src) // before late data: its peer reset, and knows
	case dst != nil && !dst.open():
		x.lateData(src) // src's peer sent bytes that dst can no longer take
	case other != nil && other.resetByPeer():
		x.peerReset(other)
	default:
		x.cutAll(OutcomeError, fmt.Errorf("relay %s → %s: %w", src.name, nameOf(dst), err))
	}
}

func nameOf(l *leg) string {
	if l == nil {
		return "nowhere"
	}
	return string(l.name)
}

// peerReset: l's peer sent an RST. If a stream through the session was not
// finished, it was cut: the other leg is reset too, once its peer
// acknowledged what the proxy passed on to it (at most drain_timeout).
// Those bytes came before the RST, and l's peer counts them delivered:
// its kernel had them acknowledged by the proxy's. Reset at once, the
// other leg's send queue would go with them.
//
// What l's peer sent before its RST may still wait in l's socket, however
// the reset was found (a write, the proxy's FIN, a reading of the
// socket's state): while the direction from l still reads, it reads
// those bytes first and then meets the reset itself (peerReset again);
// closed now, the socket would take them with it. Its read may then only
// say EOF (a call that met the reset took the socket's error): peerRST
// makes that EOF the reset.
func (x *executor) peerReset(l *leg) {
	x.resetBy(l)   // now: while its close waits, no later outcome goes first
	d := x.from(l) // its dst is where l's peer's bytes went
	if d != nil && d.dst != nil && !d.done && l.open() {
		l.peerRST = true
		l.at, l.ackAt = time.Time{}, time.Time{} // no more looks: the direction's end decides
		return
	}
	x.closeReset(l)
	if x.allClean() {
		return
	}
	var to *leg
	if d != nil {
		to = d.dst
	}
	x.idleAt = time.Time{}
	for _, o := range x.legs {
		switch {
		case !o.open() || o.due != dueNone:
		case o == to:
			x.cutDelivered(o)
		default:
			x.decide(o, policy.Cut)
		}
	}
}

// resetBy records l's peer's reset as the session's outcome (unless an
// earlier one stands).
func (x *executor) resetBy(l *leg) {
	if l.name == policy.Front {
		x.rec.Outcome(OutcomeClientReset, errClientRST)
	} else {
		x.rec.Outcome(OutcomeBackendReset, errBackRST)
	}
}

// allClean says every stream through the session ended in order.
func (x *executor) allClean() bool {
	for _, d := range x.dirs {
		if !d.clean {
			return false
		}
	}
	return true
}

// closeReset records that l's peer reset it, as the leg's close and the
// session's outcome, and closes its socket. A reset between messages
// (Ending.Between) of a peer that acknowledged every byte it was sent
// cut nothing: the outcome stays as it was.
func (x *executor) closeReset(l *leg) {
	unacked, known := l.unackedKnown() // what the peer's reset left unacknowledged never reached it
	if !l.between || !known || unacked > 0 {
		x.resetBy(l)
	}
	x.rec.closed(l.name, policy.ClosePeerReset)
	x.rec.Note(l.name, policy.ReasonPeerReset)
	x.rec.discarded(l.name, unacked)
	l.closeSocket()
}

// wholeThenLate ends a leg whose stream toward the peer is whole (End
// has nothing more to send) while the peer's bytes wait that nothing
// will take (http1: requests pipelined behind the last response): a
// peer that reads to EOF (a close-delimited response has no other end)
// gets the FIN first, so that it sees its stream end in order, then the
// late-data reset once it acknowledged all of it (RFC 9112's staged
// close, with the reset in place of a lingering read). Any other learns
// by the reset alone, after its whole stream.
func (x *executor) wholeThenLate(l *leg) {
	l.sendDone = true
	if l.awaitsEOF || l.mayEOF && !l.peerFIN {
		l.readyFIN()
		if err := l.conn.CloseWrite(); err == nil {
			l.finSent = true
			x.rec.finOut(l.name)
			if !l.peerFIN {
				l.afterFIN()
			}
		}
	}
	x.lateData(l)
}

// lateData: l's peer sent bytes that can no longer be delivered: a reset
// tells it they were lost.
func (x *executor) lateData(l *leg) {
	if l.peerRST {
		// Its peer's reset waited for the direction from l to end (no
		// look of l's is armed meanwhile): it ended.
		x.peerReset(l)
		return
	}
	if l.due != dueNone {
		return // its reset is due already
	}
	x.rec.Outcome(OutcomeLateData, fmt.Errorf("the %s sent bytes that could no longer be delivered", l.name.Peer()))
	x.decide(l, policy.LateData)
}

// cutAll ends the session at once: every leg still open is reset, and a
// leg whose peer had not received its whole stream is recorded as cut.
func (x *executor) cutAll(o Outcome, err error) {
	x.rec.Outcome(o, err)
	x.idleAt = time.Time{}
	for _, l := range x.legs {
		if l.open() {
			x.decide(l, policy.Cut)
		}
	}
}
