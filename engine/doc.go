// Package engine is closeproxy's close engine: the one executor of the
// close policy for every mode (tcp relays, http1 tunnels, and the legs
// http1 ends alone between exchanges). It owns relaying bytes, half-close,
// the safe reset, the rules that outrank the policy table, the reading of
// who closed first from the kernel, and the Recorder that builds each
// session's teardown record. The proxy package keeps listeners, sessions
// and dispatch; the policy package decides, this package acts.
//
// How it works: a Session runs an executor over one or two legs. One
// goroutine per direction copies bytes (read/write in 16 KiB chunks, then
// splice for bulk) and reports once, when its direction ends; the
// executor's goroutine owns all other state. At each event — a stream
// ended in order, the peer's FIN read, a grace or half-close wait that
// found the peer silent, late data, a reset, an idle timeout, shutdown —
// it gathers the facts (from the kernel where they are the kernel's:
// TCP_INFO's state says whether the peer's FIN is in, SIOCOUTQ whether
// every byte sent is acknowledged, SIOCINQ whether the peer's bytes wait
// unread), asks policy.Decide, and carries the decision out. Rule 1 uses
// the copiers' timestamps of the last bytes each way; rule 2 counts a
// peer's silence only while its bytes do not wait in the proxy.
//
// Who sent the first FIN of a leg is read from the kernel around the
// proxy's own FIN (finOrder): the state before and after it, and segment
// counts up to the peer's FIN. The answer is the peer, the proxy, both
// (the FINs crossed: TIME-WAIT on each side) or, when the whole exchange
// completed too fast to tell, unknown.
//
// Loops run the same executor on event loops instead of goroutines
// (Loops.Relay), and host Tasks: sessions that are state machines of
// their own (http1's exchanges), which reach their sockets, timer and the
// ending of their legs through a Runner.
//
// A peer's FIN that the proxy's own cannot follow at once is acknowledged
// within ackDelay (TCP_QUICKACK) rather than by the kernel's delayed ACK:
// see ackNow for the TIME-WAIT that a late delayed ACK would cost the
// peer.
//
// Usage (a tcp session):
//
//	rec := engine.NewRecorder(id, "web", "app", policy.TargetProxy, policy.TargetPeer)
//	s := &engine.Session{Rec: rec, Front: ln.Close, Back: be.Close, Idle: ln.IdleTimeout,
//		Drain: drainCtx.Done(), Kill: kill}
//	s.Relay(clientConn, backendConn, engine.Pending{Up: bytesPastHeader})
//	log.Info("teardown", rec.Done().Fields()...)
//
// Error contract: nothing here returns an error. Whatever a peer or a
// socket does ends that session only, and is in its record (outcome,
// error, each leg's close, reason and cut).
package engine
