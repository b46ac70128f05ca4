package doctor

import (
	"cmp"
	"math"
	"net/netip"
	"slices"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// groupTimeWait splits TIME-WAIT sockets into the accepting side (the local
// port is one some socket listens on, on that address or a wildcard; or,
// listened on by none, one outside the ephemeral range [lo, hi], which
// connect() does not pick: a listener that closed, as after a restart or
// a drain) and the dialing side (everything else), grouped by listening
// port and by remote ip:port. LISTEN sockets in socks only say which
// ports are listened on. lo and hi 0: the range is unknown. sock_diag
// also answers a TIME-WAIT request with orphaned FIN-WAIT-2 sockets
// (state 5): they are counted apart, never as TIME-WAIT.
func groupTimeWait(socks []sockdiag.Socket, usable, top, lo, hi int) TimeWait {
	listening := map[uint16][]netip.Addr{}
	for _, s := range socks {
		if s.State == stateListen {
			listening[s.Local.Port()] = append(listening[s.Local.Port()], s.Local.Addr())
		}
	}
	tw := TimeWait{ByListenPort: []PortCount{}, TopDestinations: []Destination{}}
	byPort, byDest := map[uint16]int{}, map[netip.AddrPort]int{}
	for _, s := range socks {
		switch {
		case s.State == sockdiag.FinWait2:
			tw.FinWait2++
		case s.State != sockdiag.TimeWait:
		case accepted(s, listening) || listening[s.Local.Port()] == nil && outside(s.Local.Port(), lo, hi):
			tw.Accepting++
			byPort[s.Local.Port()]++
		default:
			tw.Dialing++
			byDest[s.Peer]++
		}
	}
	tw.Total = tw.Accepting + tw.Dialing
	for port, n := range byPort {
		tw.ByListenPort = append(tw.ByListenPort, PortCount{Port: port, Count: n})
	}
	slices.SortFunc(tw.ByListenPort, func(a, b PortCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Port, b.Port))
	})
	tw.ByListenPort = tw.ByListenPort[:min(top, len(tw.ByListenPort))]
	tw.Destinations = len(byDest)
	tw.TopDestinations = topDestinations(byDest, usable, top)
	return tw
}

// outside reports that port is not in the ephemeral range [lo, hi],
// when the range is known.
func outside(port uint16, lo, hi int) bool {
	return hi > 0 && (int(port) < lo || int(port) > hi)
}

// accepted reports whether s's local address is one a socket listens on.
func accepted(s sockdiag.Socket, listening map[uint16][]netip.Addr) bool {
	for _, a := range listening[s.Local.Port()] {
		if a.IsUnspecified() || a == s.Local.Addr() {
			return true
		}
	}
	return false
}

func topDestinations(byDest map[netip.AddrPort]int, usable, top int) []Destination {
	out := make([]Destination, 0, len(byDest))
	for addr, n := range byDest {
		d := Destination{Addr: addr, Count: n}
		if usable > 0 {
			d.Share = math.Round(1e4*float64(n)/float64(usable)) / 1e4
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Destination) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), a.Addr.Compare(b.Addr))
	})
	return out[:min(top, len(out))]
}
