// Package balance chooses which of a backend's servers takes a new
// session, and keeps the health state that feeds the choice.
//
// It is a package of its own for the reason policy is: the choice is a pure
// function of a few figures (weights, sessions per server, health, the
// client's address), so its guarantees — the shares of round_robin, the
// spread of least_conn, the stickiness and minimal remapping of
// hash_client, the rise/fall/ejection/ease-in state machine — are tested as
// tables, without sockets. It does no I/O, starts no goroutines and logs
// nothing; proxy dials, runs the health checks and reports what happened.
//
// Algorithms (Balancer.Order returns the servers in the order to try):
//
//   - least_conn: fewest sessions per unit of weight, counting the new one
//     ((active+1)/weight, so that a server being eased in is not picked on a
//     tie at zero); ties go round-robin.
//   - round_robin: smooth weighted round-robin (nginx's): over any run of
//     sum(weights) picks, each server is picked exactly its weight times,
//     interleaved.
//   - hash_client: weighted rendezvous (highest random weight) hashing of
//     the client's IP address: every server scores w / -ln(u), u a hash of
//     (client, server) in (0,1); the highest wins. A client stays on its
//     server while the set is unchanged; removing a server moves exactly
//     the clients it had; raising a server's weight (ease-in) only moves
//     clients to it.
//
// Only servers that are up are picked; the other up servers follow as
// fallbacks for a failed dial. When no server is up, every server is
// returned, by the same rule: the health state may be wrong (all checks
// failing for a reason of ours), and a dial that fails costs one
// connect_timeout at most.
//
// Usage:
//
//	b := balance.New(balance.LeastConn)
//	h := balance.NewHealth(balance.HealthConfig{Rise: 2, Fall: 3, EjectAfter: 3, EaseIn: 10 * time.Second})
//	order := b.Order([]balance.Candidate{{Key: "10.0.0.11:80", Weight: h.Weight(1, now), Active: 3, Up: h.Up(now)}, …}, client)
//	h.Checked(ok, now) // an active check's result
//	h.Passive(ok, now) // a session's dial or reset
package balance
