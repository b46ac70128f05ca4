package evloop

import (
	"net/netip"
	"time"
)

// Config is what a prototype Server needs: where to listen, the one
// backend to dial for every session, and how to end a leg.
type Config struct {
	// Listen is the address every loop's listener binds with SO_REUSEPORT;
	// port 0 picks one port for all loops (read it back with Server.Addr).
	Listen netip.AddrPort
	// Backend is dialed, IPv4 only, once per accepted connection.
	Backend netip.AddrPort
	// Loops is the number of event loops; 0 means runtime.GOMAXPROCS(0).
	Loops int
	// SafeReset ends a leg whose peer's FIN came first with an RST instead
	// of the proxy's FIN, once SIOCOUTQ reads 0 (no TIME-WAIT on that
	// peer); off passes every FIN on.
	SafeReset bool
	// HTTP1 serves each client connection as http1 exchanges on the loop
	// (http1_linux.go), backend connections kept on an idle list per loop,
	// instead of relaying bytes.
	HTTP1 bool
	// Readings, in http1 mode, makes that many kernel readings of a client
	// connection as the proxy ends it (one SIOCOUTQ, the rest TCP_INFO),
	// results unused: what the engine's true records read at a front leg's
	// end (rule 1's SIOCOUTQ, the FIN-order proofs' TCP_INFO), priced on
	// this shape.
	Readings int
	// DrainTimeout bounds the wait for SIOCOUTQ to reach 0 before a safe
	// reset falls back to a FIN; 0 means 1s.
	DrainTimeout time.Duration
}

func (c Config) drainTimeout() time.Duration {
	if c.DrainTimeout <= 0 {
		return time.Second
	}
	return c.DrainTimeout
}
