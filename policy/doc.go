// Package policy decides who sends the first FIN on each leg of a proxied
// connection, and so where TCP's TIME-WAIT lands. It owns the close policy
// table of DESIGN.md as pure functions: no sockets, no goroutines, no logging.
// It imports nothing of the project.
//
// Words: the front leg joins the client (usually a load balancer) to the
// proxy, which accepted it; the back leg joins the proxy to the backend, which
// the proxy dialed. A leg ends peer-first when the proxy reads the peer's FIN
// before it has anything left to send, and proxy-first when the proxy has
// nothing left to send (the other leg finished delivering, or a timeout) while
// the peer has not yet sent its FIN.
//
// Each leg has a target, where TIME-WAIT should land:
//
//	target    front    back      proxy-first                       peer-first
//	proxy     proxy    proxy     FIN now, wait for the peer's FIN   FIN second (TIME-WAIT on peer: wanted≠got)
//	peer      client   backend   withhold FIN up to peer_fin_grace  FIN second (TIME-WAIT on peer)
//	                             of silence; then FIN, or fallback
//	nowhere   nowhere  nowhere   as peer, then a safe reset          safe reset (no TIME-WAIT)
//
// A safe reset is an RST sent only once every byte sent on the leg is
// acknowledged; if the send queue does not drain in drain_timeout the proxy
// sends a FIN instead. "auto" is reserved for a later release and is refused
// when parsing a leg's target.
//
// Usage:
//
//	act := policy.Decide(policy.Event{Leg: policy.Front, Target: policy.TargetPeer,
//		Fallback: policy.FallbackFIN, Kind: policy.ProxyFirst})
//	// act == policy.WithholdFIN
package policy
