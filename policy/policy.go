package policy

import (
	"fmt"
	"strings"
)

// Leg names one of the two TCP connections of a proxied session.
type Leg string

const (
	// Front is client ↔ proxy; the proxy accepted it.
	Front Leg = "front"
	// Back is proxy ↔ backend; the proxy dialed it.
	Back Leg = "back"
)

func (l Leg) String() string { return string(l) }

// Peer returns the side at the other end of the leg from the proxy.
func (l Leg) Peer() Side {
	if l == Front {
		return SideClient
	}
	return SideBackend
}

// Target is where a leg's TIME-WAIT should land. The zero value is invalid.
type Target string

const (
	// TargetProxy: the proxy sends the first FIN when it ends the leg.
	TargetProxy Target = "proxy"
	// TargetPeer: the proxy withholds its FIN and waits for the peer's.
	// Spelled "client" on the front leg and "backend" on the back leg.
	TargetPeer Target = "peer"
	// TargetNowhere: the leg ends with a safe reset; no TIME-WAIT anywhere.
	TargetNowhere Target = "nowhere"
	// TargetAuto chooses per close from live measurements: see Resolve.
	TargetAuto Target = "auto"
)

// Word is the spelling a user writes for t on leg l, and the one records
// carry: the peer target is "client" on the front leg, "backend" on the back.
func (t Target) Word(l Leg) string {
	if t == TargetPeer {
		return string(l.Peer())
	}
	return string(t)
}

// Holder is the side a target wants to hold the leg's TIME-WAIT: the proxy,
// the peer, or none. Auto has no holder of its own until Resolve chose.
func (t Target) Holder(l Leg) Side {
	switch t {
	case TargetProxy:
		return SideProxy
	case TargetPeer:
		return l.Peer()
	case TargetNowhere:
		return SideNone
	}
	return ""
}

// Words lists the accepted spellings of a target on leg l.
func Words(l Leg) []string {
	return []string{"proxy", string(l.Peer()), "nowhere", "auto"}
}

// ParseTarget reads a target as spelled for leg l.
func ParseTarget(l Leg, word string) (Target, error) {
	switch word {
	case "proxy":
		return TargetProxy, nil
	case string(l.Peer()):
		return TargetPeer, nil
	case "nowhere":
		return TargetNowhere, nil
	case "auto":
		return TargetAuto, nil
	}
	return "", fmt.Errorf("%q is not one of %s", word, strings.Join(Words(l), ", "))
}

// Fallback is what a withheld FIN becomes when the peer stayed silent for
// the grace.
type Fallback string

const (
	// FallbackFIN sends the FIN after all: TIME-WAIT lands on the proxy.
	FallbackFIN Fallback = "fin"
	// FallbackReset ends the leg with a safe reset: no TIME-WAIT.
	FallbackReset Fallback = "reset"
)

func (f Fallback) String() string { return string(f) }

// ParseFallback reads "fin" or "reset".
func ParseFallback(word string) (Fallback, error) {
	switch Fallback(word) {
	case FallbackFIN, FallbackReset:
		return Fallback(word), nil
	}
	return "", fmt.Errorf("%q is not one of fin, reset", word)
}

// Side names a party to a session, as records spell it: who sent the first
// FIN of a leg, and who holds its TIME-WAIT.
type Side string

const (
	SideClient  Side = "client"
	SideBackend Side = "backend"
	SideProxy   Side = "proxy"
	SideNone    Side = "none"
	// SideBoth: the FINs crossed (a simultaneous close): each side sent its
	// FIN before the other's arrived, and both hold TIME-WAIT.
	SideBoth Side = "both"
	// SideUnknown: the kernel could not tell whether the FINs crossed. The
	// proxy sent the first FIN and holds TIME-WAIT; the peer may hold one
	// too.
	SideUnknown Side = "unknown"
)

// Sides is every Side, for the metrics' series that exist at zero before
// their first close (a leg's peer is the client on the front leg, the
// backend on the back leg).
var Sides = []Side{SideClient, SideBackend, SideProxy, SideNone, SideBoth, SideUnknown}

func (s Side) String() string { return string(s) }

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

// Closes is every Close but CloseNone (a leg that never opened is not
// counted), for the metrics' series that exist at zero before their first
// close.
var Closes = []Close{CloseFIN, CloseReset, ClosePeerReset, CloseError, ClosePooled}

// TimeWait says which side holds TIME-WAIT for a leg that ended as described:
// after an exchange of FINs, the side whose FIN was first (both after FINs
// that crossed, unknown where the kernel could not tell); any reset leaves
// none. bothFINs reports that both FINs were exchanged.
func TimeWait(firstFIN Side, c Close, bothFINs bool) Side {
	if c != CloseFIN || !bothFINs || firstFIN == SideNone || firstFIN == "" {
		return SideNone
	}
	return firstFIN
}
