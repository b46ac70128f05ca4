package policy

import "time"

// Event is what happened on a leg that asks for a decision.
type Event string

const (
	// SendDone: nothing more will be sent to the peer. The stream toward it
	// ended in order (its source sent a FIN and every byte was written).
	SendDone Event = "send_done"
	// PeerFIN: the peer's FIN was read while the proxy withholds its own or
	// after the proxy sent its own.
	PeerFIN Event = "peer_fin"
	// GraceExpired: the proxy withholds its FIN and the peer stayed silent
	// for the grace. Time the peer spent blocked by the proxy's own full
	// buffers does not count as silence.
	GraceExpired Event = "grace_expired"
	// ProbeExpired: the proxy withheld its FIN briefly from a peer that
	// may be waiting for EOF (Decision.Probe) and the brief wait ran out.
	ProbeExpired Event = "probe_expired"
	// HalfCloseExpired: the proxy's FIN went first and the peer stayed
	// silent for half_close_timeout without sending its own.
	HalfCloseExpired Event = "half_close_expired"
	// QueueStuck: a safe reset waited drain_timeout and the send queue was
	// still not acknowledged.
	QueueStuck Event = "queue_stuck"
	// LateData: the peer sent bytes that can no longer be delivered (the
	// other side is gone).
	LateData Event = "late_data"
	// Cut: a stream toward the peer or from it was cut short: an idle
	// timeout, shutdown, or the other leg's reset or error.
	Cut Event = "cut"
	// Drain: shutdown_timeout ran out while the proxy withholds its FIN.
	Drain Event = "drain"
)

// Facts are what the engine knows of a leg when something happened on it.
// Adding a field breaks no caller.
type Facts struct {
	Leg      Leg
	Target   Target // as configured; TargetAuto is resolved from Auto
	Fallback Fallback
	Auto     AutoState
	Event    Event
	// PeerFINIn: the kernel holds the peer's FIN (the socket left
	// ESTABLISHED for CLOSE-WAIT), whether or not the proxy read it yet.
	PeerFINIn bool
	// FINSent: the proxy's FIN is out already.
	FINSent bool
	// PeerMayAwaitEOF: the peer has sent nothing since the last bytes the
	// proxy sent it (or those bytes are not acknowledged yet, or what it
	// sent is still unread): it may be waiting for EOF to know a message
	// ended. Withholding the FIN from it could stall it.
	PeerMayAwaitEOF bool
	// OtherSideDone: the other leg's peer closed after receiving
	// everything sent to it, so nothing this leg's peer may still send can
	// matter to it: a grace may end this peer's stream by a reset. When
	// false, a reset here could cut a stream the other side still reads,
	// and the fallback becomes a FIN.
	OtherSideDone bool
	Grace         Grace
	HalfClose     time.Duration // half_close_timeout
	DrainTimeout  time.Duration // drain_timeout: how long a safe reset waits for the send queue
}

// Grace is what sizes the silence a withheld FIN waits for.
type Grace struct {
	Max      time.Duration // peer_fin_grace
	Adaptive bool          // adaptive_grace: scale with the peer's own pauses
	MaxPause time.Duration // the longest the peer went quiet earlier in the session
	RTT      time.Duration // the leg's smoothed round-trip time; 0 if unknown
}

// Grace bounds. A peer that may be waiting for EOF is withheld from for
// MinGrace at most (or four round trips): long enough for a client to
// close once it has a whole answer, even on a loaded host. An adaptive
// grace waits four times the peer's longest earlier pause, at least
// MinSilence and four round trips.
const (
	MinGrace    = 50 * time.Millisecond
	MinSilence  = 10 * time.Millisecond
	pauseFactor = 4
	rttFactor   = 4
)

// Silence is how long a withheld FIN waits for the peer's: Max, or with
// Adaptive, four times the peer's longest earlier pause, at least
// MinSilence and four round trips, at most Max.
func (g Grace) Silence() time.Duration {
	if !g.Adaptive {
		return g.Max
	}
	return min(g.Max, max(MinSilence, rttFactor*g.RTT, pauseFactor*g.MaxPause))
}

// Floor is the probe a peer that may be waiting for EOF gets: MinGrace or
// four round trips, at most Max; then it gets the FIN.
func (g Grace) Floor() time.Duration {
	return min(g.Max, max(MinGrace, rttFactor*g.RTT))
}

// Action is what the engine does to the leg.
type Action string

const (
	// FIN: shut down writing, then read on until the peer's FIN, at most
	// Wait of the peer's silence (then HalfCloseExpired). First or second
	// is the kernel's fact, recorded as it falls.
	FIN Action = "fin"
	// Withhold: send nothing; wait for the peer's FIN while its data still
	// flows, at most Wait of silence (then GraceExpired).
	Withhold Action = "withhold"
	// SafeReset: once the peer's stream is read to its end and every byte
	// sent is acknowledged (at most Wait: then QueueStuck), close with an
	// RST.
	SafeReset Action = "safe_reset"
	// Reset: close with an RST. A stream was cut: the peer must not take
	// it for a complete one. Now, or with a Wait once the peer
	// acknowledged every byte sent (at most Wait: then at once, and what
	// it did not acknowledge was cut): an RST destroys what is still in
	// flight, and a segment of it that was lost would never be resent.
	Reset Action = "reset"
	// Finish: both FINs are through; close the socket.
	Finish Action = "finish"
)

func (a Action) String() string { return string(a) }

// Decision is the action for a leg, how long it may wait, the target in
// force and why the leg left the table's plain path, if it did.
type Decision struct {
	Action Action
	Wait   time.Duration
	// Probe: this Withhold only asks whether a peer that may be waiting for
	// EOF is: when Wait runs out the engine sends ProbeExpired, whatever
	// the peer did meanwhile.
	Probe      bool
	Target     Target // the target in force: auto resolved
	AutoReason string // with auto: why Resolve chose Target
	Reason     Reason
}

// Reason says why a leg's TIME-WAIT did not land where its target wanted,
// or why it was reset; records carry it as <leg>.reason.
type Reason string

const (
	ReasonNone Reason = ""
	// ReasonPeerFirst: the peer's FIN came first; the proxy's is second and
	// TIME-WAIT is the peer's (target proxy wanted it).
	ReasonPeerFirst Reason = "peer_first"
	// ReasonAwaitsEOF: the peer may be waiting for EOF, so the FIN was
	// passed on rather than withheld; TIME-WAIT lands where it must.
	ReasonAwaitsEOF Reason = "peer_may_await_eof"
	// ReasonGraceExpired: the peer stayed silent for the grace; the
	// fallback was taken.
	ReasonGraceExpired Reason = "grace_expired"
	// ReasonQueueStuck: a safe reset was due but the send queue did not
	// drain in drain_timeout; a FIN went instead.
	ReasonQueueStuck Reason = "queue_not_drained"
	// ReasonHalfClose: after the proxy's FIN the peer stayed silent for
	// half_close_timeout and never sent its own; the leg was reset.
	ReasonHalfClose Reason = "half_close_timeout"
	// ReasonLateData: the peer sent bytes that could no longer be
	// delivered; the leg was reset so that it learns they were lost.
	ReasonLateData Reason = "late_data"
	// ReasonCut: a stream toward or from the peer was cut short; the leg
	// was reset so that the peer cannot take it for a complete one.
	ReasonCut Reason = "cut"
	// ReasonDraining: shutdown_timeout ran out while the FIN was withheld,
	// and the fallback was taken early; or (http1) draining closed an idle
	// keep-alive connection or ended it after its response.
	ReasonDraining Reason = "draining"
	// ReasonOtherReading: the grace ran out, but the other side may still
	// read what this peer sends after its pause: a FIN went instead of the
	// fallback's reset, so nothing can be cut.
	ReasonOtherReading Reason = "other_side_reading"
	// ReasonPeerReset: the peer reset the leg.
	ReasonPeerReset Reason = "peer_reset"
	// ReasonCrossed: the FINs crossed (simultaneous close): TIME-WAIT on
	// both sides.
	ReasonCrossed Reason = "fins_crossed"
	// ReasonUnknown: whether the FINs crossed could not be told.
	ReasonUnknown Reason = "order_unknown"
	// ReasonCloseDelimited (http1): a response delimited by the close
	// can only end with the proxy's FIN.
	ReasonCloseDelimited Reason = "close_delimited"
	// ReasonIdle (http1): no request came for idle_timeout between
	// requests; the connection was ended by its policy.
	ReasonIdle Reason = "idle_timeout"
	// ReasonRetried (http1): a request was sent again on another backend
	// connection after this one closed before answering.
	ReasonRetried Reason = "retried"
	// ReasonRefused: the connection was reset at once, before any byte was
	// relayed (bad PROXY header, over max_connections, no backend).
	ReasonRefused Reason = "refused"
)

// Reasons is every Reason but ReasonNone, for the metrics' series that
// exist at zero before their first close.
var Reasons = []Reason{ReasonPeerFirst, ReasonAwaitsEOF, ReasonGraceExpired, ReasonQueueStuck,
	ReasonHalfClose, ReasonLateData, ReasonCut, ReasonDraining, ReasonOtherReading, ReasonPeerReset,
	ReasonCrossed, ReasonUnknown, ReasonCloseDelimited, ReasonIdle, ReasonRetried, ReasonRefused}

func (r Reason) String() string { return string(r) }

// Decide maps the facts about a leg to what the engine does next, as the
// close policy table and the rules that outrank it say. It is total: every
// event gets a decision. The engine passes the target a first decision put
// in force (auto resolved) with the events that follow it, so that a leg
// keeps the choice auto made for it.
func Decide(f Facts) Decision {
	d := resolve(f)
	switch f.Event {
	case Cut:
		d.Action, d.Reason = Reset, ReasonCut
		return d
	case LateData:
		// The peer's late bytes are lost; what it was sent is not.
		d.Action, d.Wait, d.Reason = Reset, f.DrainTimeout, ReasonLateData
		return d
	case HalfCloseExpired:
		d.Action, d.Reason = Reset, ReasonHalfClose
		return d
	case QueueStuck:
		d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonQueueStuck
		return d
	case PeerFIN:
		if f.FINSent {
			d.Action = Finish
			return d
		}
		f.PeerFINIn = true
		return ending(f)
	case GraceExpired, Drain, ProbeExpired:
		if f.PeerFINIn {
			// The peer closed while the FIN was withheld, its FIN not read
			// yet (bytes before it wait unread, or no copier reads the
			// leg): the peer's close decides, not the silence it ended.
			return ending(f)
		}
		if f.Event == ProbeExpired {
			return probed(f)
		}
		return graceOut(f)
	}
	return ending(f)
}

// ending decides a leg with nothing more to send: peer-first when the
// kernel holds the peer's FIN, proxy-first otherwise.
func ending(f Facts) Decision {
	d := resolve(f)
	if f.PeerFINIn {
		switch {
		case d.Target == TargetNowhere && f.PeerMayAwaitEOF:
			// A peer that half-closed and reads to EOF (an http1
			// close-delimited response) takes an RST for a cut: the
			// FIN is its stream's end (rule 1).
			d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonAwaitsEOF
		case d.Target == TargetNowhere:
			d.Action, d.Wait = SafeReset, f.DrainTimeout
		case d.Target == TargetProxy:
			d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonPeerFirst
		default:
			d.Action, d.Wait = FIN, f.HalfClose
		}
		return d
	}
	switch {
	case d.Target == TargetProxy:
		d.Action, d.Wait = FIN, f.HalfClose
	case f.PeerMayAwaitEOF:
		// Rule 1: a FIN the peer may be waiting for is passed on in time.
		// A peer that closes or speaks within the grace's floor shows it was
		// not waiting; one that stays silent gets the FIN then.
		d.Action, d.Wait, d.Probe = Withhold, f.Grace.Floor(), true
	default:
		d.Action, d.Wait = Withhold, f.Grace.Silence()
	}
	return d
}

// probed decides a brief withhold from a peer that may have been waiting
// for EOF: still silent since the proxy's last bytes, it gets the FIN now;
// one that spoke meanwhile was not waiting, and the FIN is withheld for the
// grace.
func probed(f Facts) Decision {
	d := resolve(f)
	if f.PeerMayAwaitEOF {
		d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonAwaitsEOF
		return d
	}
	d.Action, d.Wait = Withhold, f.Grace.Silence()
	return d
}

// graceOut decides a withheld FIN whose peer stayed silent, or whose wait
// shutdown cut short: the fallback, unless the peer may be waiting for EOF.
func graceOut(f Facts) Decision {
	d := resolve(f)
	d.Reason = ReasonGraceExpired
	if f.Event == Drain {
		d.Reason = ReasonDraining
	}
	switch {
	case f.PeerMayAwaitEOF:
		d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonAwaitsEOF
	case (d.Target == TargetNowhere || f.Fallback == FallbackReset) && !f.OtherSideDone:
		// A reset would end the peer's stream as if whole; the other side
		// still reads it. A FIN lets the peer go on, and nothing is cut.
		d.Action, d.Wait, d.Reason = FIN, f.HalfClose, ReasonOtherReading
	case d.Target == TargetNowhere || f.Fallback == FallbackReset:
		d.Action, d.Wait = SafeReset, f.DrainTimeout
	default:
		d.Action, d.Wait = FIN, f.HalfClose
	}
	return d
}

func resolve(f Facts) Decision {
	d := Decision{Target: f.Target}
	if f.Target == TargetAuto {
		d.Target, d.AutoReason = Resolve(f.Leg, f.PeerFINIn, f.Auto)
	}
	return d
}

// Lands says where TIME-WAIT ends up once an action is carried out and the
// leg closes in order: FIN second leaves it on the peer, FIN first on the
// proxy (on both sides if the FINs cross), any reset nowhere. Withhold
// leaves the leg open: it returns "".
func Lands(l Leg, a Action, peerFINIn bool) Side {
	switch a {
	case FIN:
		if peerFINIn {
			return l.Peer()
		}
		return SideProxy
	case SafeReset, Reset:
		return SideNone
	}
	return ""
}
