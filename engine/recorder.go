package engine

import (
	"net/netip"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// Recorder builds one session's Teardown from typed events: every field is
// written here, once, by the event that decides it. The session's
// goroutine owns it; it is not safe for concurrent use.
type Recorder struct {
	td    Teardown
	start time.Time
}

// NewRecorder starts the record of session id, accepted now on listener
// (whose front leg wants front) for backend (whose back leg wants back).
func NewRecorder(id uint64, listener, backend string, front, back policy.Target) *Recorder {
	return &Recorder{start: time.Now(), td: Teardown{
		ID: id, Listener: listener, Backend: backend, ProxyProtocol: "none",
		Front: newLegRecord(policy.Front, front), Back: newLegRecord(policy.Back, back),
		BackConnect: -1, Outcome: OutcomeOK,
	}}
}

// Start is when the session was accepted: every time in the record counts
// from it.
func (r *Recorder) Start() time.Time { return r.start }

func (r *Recorder) since() time.Duration { return time.Since(r.start) }

// Accepted notes the front leg's addresses and, with intercept, the address
// the client dialed.
func (r *Recorder) Accepted(local, peer, originalDst netip.AddrPort) {
	r.td.Front.Local, r.td.Front.Peer = local, peer
	r.td.Client, r.td.OriginalDst = peer, originalDst
}

// Intake notes the PROXY header read (version "none" when there was none)
// and the real client it named.
func (r *Recorder) Intake(version string, client netip.AddrPort) {
	r.td.ProxyProtocol = version
	if version != "none" && client != r.td.Front.Peer {
		r.td.Client, r.td.LB = client, r.td.Front.Peer
	}
}

// Client is the real client: from the PROXY header when there was one.
func (r *Recorder) Client() netip.AddrPort { return r.td.Client }

// OriginalDst is the address the client dialed, under intercept.
func (r *Recorder) OriginalDst() netip.AddrPort { return r.td.OriginalDst }

// Acquiring notes that a backend connection is sought anew (http1: one a
// request): back.tries counts the servers tried for the last one.
func (r *Recorder) Acquiring() { r.td.BackTries = 0 }

// Trying notes that a server is asked for a connection.
func (r *Recorder) Trying(server string) {
	r.td.BackTries++
	r.td.BackServer = server
}

// Connecting notes how long getting a backend connection took; only the
// first one of a session counts.
func (r *Recorder) Connecting(d time.Duration) {
	if r.td.BackConnect < 0 {
		r.td.BackConnect = d
	}
}

// Connected notes a backend connection in use: whether it came from the
// pool, whether it served a request before, and its addresses.
func (r *Recorder) Connected(pooled, reused bool, local, peer netip.AddrPort) {
	r.td.BackPooled = r.td.BackPooled || pooled
	r.td.BackReused = r.td.BackReused || reused
	r.td.Back.Local, r.td.Back.Peer = local, peer
}

// BackPeer is the backend address of the connection in use.
func (r *Recorder) BackPeer() netip.AddrPort { return r.td.Back.Peer }

// Relayed counts n payload bytes carried from one leg's peer to the
// other's: up (client to backend) or down.
func (r *Recorder) Relayed(up bool, n int64) {
	if up {
		r.td.Front.BytesIn += n
		r.td.Back.BytesOut += n
	} else {
		r.td.Back.BytesIn += n
		r.td.Front.BytesOut += n
	}
}

// Received counts n bytes read from leg l's peer that went nowhere (a
// request head the proxy answers itself, late data).
func (r *Recorder) Received(l policy.Leg, n int64) { r.td.Leg(l).BytesIn += n }

// Sent counts n bytes the proxy itself wrote to leg l's peer (an error
// response, a response head).
func (r *Recorder) Sent(l policy.Leg, n int64) { r.td.Leg(l).BytesOut += n }

// Request counts a request sent to the backend (http1).
func (r *Recorder) Request() { r.td.BackRequests++ }

// Outcome sets how the session ended, with its error. The first outcome
// other than ok wins: later ones are consequences of it.
func (r *Recorder) Outcome(o Outcome, err error) {
	if r.td.Outcome == OutcomeOK && o != OutcomeOK {
		r.td.Outcome, r.td.Err = o, err
	}
}

// Current reports the outcome so far.
func (r *Recorder) Current() Outcome { return r.td.Outcome }

// Note sets leg l's reason where it has none yet (http1: retried).
func (r *Recorder) Note(l policy.Leg, why policy.Reason) {
	if lr := r.td.Leg(l); lr.Reason == "" {
		lr.Reason = why
	}
}

// Unnote clears leg l's reason if it is why: a note about one request
// (retried) that a later request is not to carry.
func (r *Recorder) Unnote(l policy.Leg, why policy.Reason) {
	if lr := r.td.Leg(l); lr.Reason == why {
		lr.Reason = ""
	}
}

// Pooled notes that the back leg's connection went back to the pool.
func (r *Recorder) Pooled() { r.td.Back.Close = policy.ClosePooled }

// Done stamps the duration and derives what is left, then returns the
// record.
func (r *Recorder) Done() *Teardown {
	r.td.Duration = r.since()
	for _, l := range []*LegRecord{&r.td.Front, &r.td.Back} {
		l.finish()
	}
	return &r.td
}

// Record returns the record as it stands.
func (r *Recorder) Record() *Teardown { return &r.td }

// The engine's events on one leg.

// PeerFINAt notes the FIN of leg l's peer as seen at at by a watch
// outside the relay (a client's, while its session waited for a backend
// connection), unless the relay read one already.
func (r *Recorder) PeerFINAt(l policy.Leg, at time.Time) {
	if lr := r.td.Leg(l); lr.FINIn < 0 {
		lr.FINIn = at.Sub(r.start)
	}
}

func (r *Recorder) finIn(l policy.Leg)                   { r.td.Leg(l).FINIn = r.since() }
func (r *Recorder) finOut(l policy.Leg)                  { r.td.Leg(l).FINOut = r.since() }
func (r *Recorder) firstFIN(l policy.Leg, s policy.Side) { r.td.Leg(l).FirstFIN = s }

// decided notes the decision that closes leg l: the target in force and
// why the plain path was left.
func (r *Recorder) decided(l policy.Leg, d policy.Decision) {
	lr := r.td.Leg(l)
	lr.Target = d.Target
	if d.AutoReason != "" {
		lr.AutoReason = d.AutoReason
	}
	if d.Reason != "" && lr.Reason == "" {
		lr.Reason = d.Reason
	}
}

// reset notes an RST the proxy sent on leg l; cut says the stream toward
// its peer was cut short.
func (r *Recorder) reset(l policy.Leg, why policy.Reason, cut bool) {
	lr := r.td.Leg(l)
	lr.RSTOut, lr.Close = r.since(), policy.CloseReset
	lr.Cut = lr.Cut || cut
	if why != "" && lr.Reason == "" {
		lr.Reason = why
	}
}

// discarded notes n bytes counted as sent to leg l's peer that a reset
// threw away unacknowledged: bytes_out says what the peer received.
func (r *Recorder) discarded(l policy.Leg, n int64) { r.td.Leg(l).discarded += n }

// closed notes how leg l's socket closed, where reset did not say.
func (r *Recorder) closed(l policy.Leg, c policy.Close) {
	if lr := r.td.Leg(l); lr.Close == policy.CloseNone || c == policy.ClosePeerReset {
		lr.Close = c
	}
}

// reopen readies leg l's record for the close of another connection (http1
// uses several backend connections in turn), or of one an earlier
// exchange gave back to the pool (pooled) that now closes (a tunnel):
// the record tells of the last close, and keeps a reason noted before.
func (r *Recorder) reopen(l policy.Leg) {
	lr := r.td.Leg(l)
	if lr.Close == policy.CloseNone {
		return
	}
	lr.FirstFIN, lr.Close, lr.Target = policy.SideNone, policy.CloseNone, ""
	lr.FINIn, lr.FINOut, lr.RSTOut = -1, -1, -1
}

// finish derives where TIME-WAIT landed from how the leg closed, and
// whether that is where its target wanted it.
func (l *LegRecord) finish() {
	l.BytesOut = max(0, l.BytesOut-l.discarded)
	l.discarded = 0
	bothFINs := l.FINIn >= 0 && l.FINOut >= 0
	l.TimeWait = policy.TimeWait(l.FirstFIN, l.Close, bothFINs)
	if l.TimeWait != policy.SideNone && l.FirstFIN == policy.SideBoth && l.Reason == "" {
		l.Reason = policy.ReasonCrossed
	}
	if l.TimeWait == policy.SideUnknown && l.Reason == "" {
		l.Reason = policy.ReasonUnknown
	}
	if l.Reason == "" && l.Target == policy.TargetProxy && l.FirstFIN == l.leg.Peer() && l.Close == policy.CloseFIN {
		// The proxy's FIN was decided first, but the kernel saw the
		// peer's come before it (they were close: the peer closed as the
		// proxy's end came): TIME-WAIT on the peer, as after any
		// peer_first.
		l.Reason = policy.ReasonPeerFirst
	}
	switch l.Close {
	case policy.ClosePooled, policy.CloseNone:
		l.AsWanted = true
	default:
		l.AsWanted = l.Target != "" && l.Target.Holder(l.leg) == l.TimeWait
	}
}
