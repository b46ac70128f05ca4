package twwatch

import (
	"maps"
	"net/netip"
	"time"
)

// Figure is one reading. OK is false when it was not read: Err says why,
// or is nil when nothing asked for it (a leg without targets).
type Figure struct {
	Value int
	OK    bool
	Err   error
}

func have(v int) Figure { return Figure{Value: v, OK: true} }

// figure turns a reader's result into a Figure.
func figure(v int, err error) Figure {
	if err != nil {
		return Figure{Err: err}
	}
	return have(v)
}

// Sample is one reading of the kernel's TIME-WAIT figures. It never
// changes once a Watcher publishes it, so any number of goroutines may
// read it.
type Sample struct {
	Seq uint64    // 1 for a Watcher's first sample, then 2, 3, …
	At  time.Time // when it was read

	Host         Figure // this network namespace's TIME-WAIT sockets (/proc/net/sockstat tw)
	MaxTWBuckets Figure // net.ipv4.tcp_max_tw_buckets
	Overflow     Figure // TcpExt TCPTimeWaitOverflow, a counter since boot
	// UsablePorts is how many local ports connect() may pick toward one
	// destination ip:port: ip_local_port_range less the
	// ip_local_reserved_ports inside it.
	UsablePorts Figure

	// Front and Back are the proxy's TIME-WAIT sockets by leg: on a
	// listener's port, and toward a backend server's address.
	Front, Back Figure
	toward      map[netip.AddrPort]int // Back, per backend address; nil unless Back.OK

	// Err joins every figure's error: what could not be read.
	Err error
}

// Toward returns the proxy's TIME-WAIT sockets toward dest, one of the
// backend addresses; ok is false when Back was not read or dest is not a
// target.
func (s *Sample) Toward(dest netip.AddrPort) (n int, ok bool) {
	n, ok = s.toward[peer(dest.Addr(), dest.Port())]
	return n, ok
}

// Destinations returns the proxy's TIME-WAIT sockets toward each backend
// address (a copy); nil when Back was not read.
func (s *Sample) Destinations() map[netip.AddrPort]int {
	return maps.Clone(s.toward)
}
