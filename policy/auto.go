package policy

// AutoConfig holds the thresholds of the auto target. The zero value is not
// useful; config fills every field.
type AutoConfig struct {
	// TWBudget is how many TIME-WAIT sockets this host may hold before auto
	// switches new closes to nowhere.
	TWBudget int
	// TWResume is the share of TWBudget below which auto switches back.
	TWResume float64
	// PortShare is the share of the usable ephemeral range that the
	// proxy's TIME-WAIT toward one backend ip:port may reach before auto
	// switches that back leg to nowhere; PortResume switches it back.
	PortShare, PortResume float64
}

// Figures are the live measurements auto decides from.
type Figures struct {
	HostTW    int // TIME-WAIT sockets on this host (estimated between samples)
	DestTW    int // back leg: the proxy's TIME-WAIT sockets toward this backend ip:port
	PortRange int // usable ephemeral ports toward one destination
}

// AutoState is what auto remembers between decisions: whether each
// pressure has switched closes to nowhere. Hysteresis lives here.
type AutoState struct {
	HostSaving bool // host TIME-WAIT over budget, not yet back under TWResume
	PortSaving bool // back leg: ports toward the backend over PortShare
}

// Reasons auto gives for its choice; records carry them as auto_reason.
const (
	ReasonAccepting   = "prefer_accepting_side" // no pressure: TIME-WAIT on the side that accepted
	ReasonHostBudget  = "host_tw_over_budget"   // this host's TIME-WAIT passed auto.tw_budget
	ReasonPorts       = "ports_toward_backend"  // the proxy's ports toward the backend near exhaustion
	ReasonSpareDialer = "spare_dialer"          // the client closed first: a safe reset spares its ports
)

// Watch updates the hysteresis state from new figures: a pressure switches
// on at its threshold and off only below its resume share. It is pure: the
// caller keeps the state.
func Watch(cfg AutoConfig, f Figures, s AutoState) AutoState {
	budget := float64(cfg.TWBudget)
	switch {
	case !s.HostSaving && float64(f.HostTW) >= budget:
		s.HostSaving = true
	case s.HostSaving && float64(f.HostTW) < cfg.TWResume*budget:
		s.HostSaving = false
	}
	if f.PortRange > 0 {
		share := float64(f.DestTW) / float64(f.PortRange)
		switch {
		case !s.PortSaving && share >= cfg.PortShare:
			s.PortSaving = true
		case s.PortSaving && share < cfg.PortResume:
			s.PortSaving = false
		}
	}
	return s
}

// Resolve turns the auto target into a concrete one for a close on leg,
// given the current state, and says why. Without pressure it prefers the
// accepting side of each leg (front: the proxy; back: the backend). When
// the client ended the front leg first (the kernel holds its FIN:
// peerFirst), the accepting side can no longer take the TIME-WAIT: a safe
// reset spares the client's ports.
func Resolve(leg Leg, peerFirst bool, s AutoState) (Target, string) {
	switch {
	case s.HostSaving:
		return TargetNowhere, ReasonHostBudget
	case leg == Back && s.PortSaving:
		return TargetNowhere, ReasonPorts
	case leg == Front && peerFirst:
		return TargetNowhere, ReasonSpareDialer
	case leg == Front:
		return TargetProxy, ReasonAccepting
	}
	return TargetPeer, ReasonAccepting
}
