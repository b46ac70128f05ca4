// Package sockdiag lists TCP sockets in a given state straight from the
// kernel through netlink sock_diag (NETLINK_SOCK_DIAG, inet_diag_req_v2),
// without root and without parsing /proc/net/tcp or ss output. It owns this
// one job so that the demo, the integration tests and later the metrics and
// doctor all count TIME-WAIT the same, exact way.
//
// Usage:
//
//	socks, err := sockdiag.List(sockdiag.TimeWait)
//	n := sockdiag.Count(socks, func(s sockdiag.Socket) bool { return s.Local.Port() == 8080 })
package sockdiag

import "net/netip"

// State is a TCP state as the kernel numbers it.
type State uint8

// The states callers ask for.
const (
	Established State = 1
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	CloseWait   State = 8
	LastAck     State = 9
	Closing     State = 11
)

// Socket is one TCP socket as the kernel reports it.
type Socket struct {
	State State
	Local netip.AddrPort
	Peer  netip.AddrPort
}

// Count returns how many sockets satisfy match.
func Count(socks []Socket, match func(Socket) bool) int {
	n := 0
	for _, s := range socks {
		if match(s) {
			n++
		}
	}
	return n
}
