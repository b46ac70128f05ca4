package policy

// Kind is what happened on a leg that asks for a decision.
type Kind string

const (
	// ProxyFirst: the proxy has nothing left to send on the leg (the other
	// leg finished delivering, or a timeout) and the peer has not sent its FIN.
	ProxyFirst Kind = "proxy_first"
	// PeerFirst: the peer's FIN arrived earlier and the proxy has now
	// finished sending; the leg ends now.
	PeerFirst Kind = "peer_first"
	// PeerFINAfterWithhold: the proxy withheld its FIN and the peer's FIN
	// arrived within the grace.
	PeerFINAfterWithhold Kind = "peer_fin"
	// GraceExpired: the proxy withheld its FIN and the peer stayed silent
	// for peer_fin_grace without sending its FIN.
	GraceExpired Kind = "grace_expired"
	// LateData: the proxy withheld its FIN and the peer sent bytes that can
	// no longer be delivered (the other leg has ended).
	LateData Kind = "late_data"
)

// Event is the plain set of facts the relay hands to Decide. Adding a field
// breaks no caller.
type Event struct {
	Leg      Leg
	Target   Target
	Fallback Fallback
	Kind     Kind
}

// Action is what the relay does to the leg.
type Action string

const (
	// FINFirst: shut down writing now (the proxy's FIN is first), then read
	// until the peer's FIN or half_close_timeout. TIME-WAIT on the proxy.
	FINFirst Action = "fin_first"
	// WithholdFIN: send nothing; wait for the peer's FIN while its data
	// still flows, at most peer_fin_grace of silence.
	WithholdFIN Action = "withhold_fin"
	// FINSecond: the peer's FIN came first; close with a FIN. TIME-WAIT on
	// the peer.
	FINSecond Action = "fin_second"
	// SafeReset: wait until the send queue is acknowledged (at most
	// drain_timeout), then close with an RST; if it does not drain, FIN.
	SafeReset Action = "safe_reset"
)

func (a Action) String() string { return string(a) }

// Decide maps an event on a leg to the action, as the close policy table
// says. It is total: every event gets an action.
func Decide(e Event) Action {
	switch e.Kind {
	case ProxyFirst:
		if e.Target == TargetProxy {
			return FINFirst
		}
		return WithholdFIN
	case PeerFirst, PeerFINAfterWithhold:
		if e.Target == TargetNowhere {
			return SafeReset
		}
		return FINSecond
	case GraceExpired, LateData:
		if e.Target == TargetNowhere || e.Fallback == FallbackReset {
			return SafeReset
		}
		return FINFirst
	}
	return FINFirst
}

// Close is how the proxy's end of a leg was closed, as records spell it.
type Close string

const (
	CloseFIN       Close = "fin"        // the proxy sent a FIN and the leg ended in order
	CloseReset     Close = "reset"      // the proxy sent an RST
	ClosePeerReset Close = "peer_reset" // the peer sent an RST
	CloseError     Close = "error"      // a socket error other than a reset
	ClosePooled    Close = "pooled"     // not closed: returned to the backend pool
	CloseNone      Close = "none"       // the leg never had a connection
)

// TimeWait says which side holds TIME-WAIT for a leg that ended as described:
// after an exchange of FINs the side whose FIN was first holds it; any reset
// leaves none. bothFINs reports that both FINs were exchanged.
func TimeWait(firstFIN Side, c Close, bothFINs bool) Side {
	if c != CloseFIN || !bothFINs || firstFIN == SideNone || firstFIN == "" {
		return SideNone
	}
	return firstFIN
}
