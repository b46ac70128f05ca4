// Package policy decides who sends the first FIN on each leg of a proxied
// connection, and so where TCP's TIME-WAIT lands. It owns the close policy
// table and the rules that outrank it as pure functions: facts in, an
// action, a wait budget and a reason out. No sockets, no goroutines, no
// logging; it imports nothing of the project. The engine package carries
// the decisions out on sockets.
//
// Words: the front leg joins the client (usually a load balancer) to the
// proxy, which accepted it; the back leg joins the proxy to the backend,
// which the proxy dialed. A leg ends peer-first when the kernel already
// holds the peer's FIN as the proxy has nothing more to send, and
// proxy-first when the proxy has nothing more to send (the other leg's
// stream ended) and the peer has not sent its FIN.
//
// Each leg has a target, where TIME-WAIT should land:
//
//	target    front    back      proxy-first                        peer-first
//	proxy     proxy    proxy     FIN now, wait for the peer's FIN   FIN second (TIME-WAIT on peer: wanted≠got)
//	peer      client   backend   withhold the FIN for a grace of    FIN second (TIME-WAIT on peer)
//	                             silence; then FIN, or fallback
//	nowhere   nowhere  nowhere   as peer, then a safe reset          safe reset (no TIME-WAIT)
//	auto      auto     auto      chosen per close by Resolve         chosen per close by Resolve
//
// Rules that outrank the table (nothing lost); where they win, Decision
// carries the Reason and the record says wanted≠got:
//
//  1. A FIN the peer may be waiting for is passed on in time. Withholding
//     is a bet that the peer is idle; a peer that sent nothing since the
//     last bytes it received (or has not acknowledged them yet) may be
//     waiting for EOF to know a message ended. It is given the grace's
//     floor (MinGrace, or four round trips) to show otherwise, by closing
//     or by speaking; if it stays silent it gets the FIN then
//     (ReasonAwaitsEOF), never a reset. Only a peer that spoke last is
//     left to the full grace.
//  2. A grace counts silence, never the proxy's own backpressure: the
//     engine stops the clock while the peer's bytes wait in the proxy
//     because the other side does not read. The silence waited for is
//     Grace.Silence: peer_fin_grace, or with adaptive_grace four times the
//     peer's longest earlier pause, at least MinSilence and four round
//     trips, at most peer_fin_grace.
//  3. A safe reset only when nothing can still be owed in either direction
//     on that leg: the peer's stream read to its end (its FIN), or a grace
//     of silence passed while the other side had closed after receiving
//     everything (Facts.OtherSideDone: nothing more the peer sends could
//     matter), and every byte sent acknowledged. Otherwise the fallback is
//     a FIN (ReasonOtherReading): a peer that only paused goes on, and its
//     stream is never cut by a bet. A send queue that does not drain in
//     drain_timeout gets a FIN instead (ReasonQueueStuck): undelivered
//     bytes are never destroyed.
//  4. A cut is never disguised: a stream ended early for any reason (idle
//     timeout, shutdown, the other leg's reset or error, late data) reaches
//     the peer as an RST (Reset), never as a clean FIN.
//  5. When one leg ends by a timeout or an error, the other ends at once by
//     rule 4; shutdown cuts what still flows and ends withheld FINs by
//     their fallback (ReasonDraining).
//  6. Who closed first is the kernel's fact: Facts.PeerFINIn comes from the
//     socket's TCP state, not from what the proxy has read. FINs that
//     cross leave TIME-WAIT on both sides (SideBoth); what cannot be known
//     is SideUnknown.
//
// A safe reset is an RST that answers the peer's FIN (or ends a silent
// leg), sent only once every byte sent on the leg is acknowledged: an RST
// answering a FIN takes the peer from FIN-WAIT-2 straight to CLOSED, so no
// TIME-WAIT lands anywhere.
//
// Usage:
//
//	d := policy.Decide(policy.Facts{Leg: policy.Back, Target: policy.TargetPeer,
//		Fallback: policy.FallbackReset, Event: policy.SendDone,
//		Grace: policy.Grace{Max: time.Second}})
//	// d.Action == policy.Withhold, d.Wait == time.Second
package policy
