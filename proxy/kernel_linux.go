package proxy

import (
	"net/netip"

	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// timeWaitToward counts this host's TIME-WAIT sockets whose peer is each
// of dests (the proxy's dialing side toward its backends), and returns the
// usable port range.
func timeWaitToward(dests []netip.AddrPort) (map[netip.AddrPort]int, int, error) {
	if len(dests) == 0 {
		return nil, 0, nil
	}
	n, err := procnet.ReadPortRange()
	if err != nil {
		return nil, 0, err
	}
	socks, err := sockdiag.List(sockdiag.TimeWait)
	if err != nil {
		return nil, 0, err
	}
	counts := make(map[netip.AddrPort]int, len(dests))
	for _, d := range dests {
		counts[d] = 0
	}
	for _, s := range socks {
		if _, ok := counts[s.Peer]; ok && s.State == sockdiag.TimeWait {
			counts[s.Peer]++
		}
	}
	return counts, n, nil
}
