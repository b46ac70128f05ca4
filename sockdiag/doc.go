// Package sockdiag lists TCP sockets in a given state straight from the
// kernel through netlink sock_diag (NETLINK_SOCK_DIAG, inet_diag_req_v2),
// without root and without parsing /proc/net/tcp or ss output. It owns this
// one job so that the demo, the integration tests and later the metrics and
// doctor all count TIME-WAIT the same, exact way.
//
// ListMatching lets the kernel select the sockets (an
// INET_DIAG_REQ_BYTECODE filter on local ports and peer addresses), so that
// a host holding 100,000 TIME-WAIT sockets costs little to sample when only
// a few hundred are of interest.
//
// Usage:
//
//	socks, err := sockdiag.List(sockdiag.TimeWait)
//	n := sockdiag.Count(socks, func(s sockdiag.Socket) bool { return s.Local.Port() == 8080 })
//	mine, err := sockdiag.ListMatching(&sockdiag.Filter{LocalPorts: []uint16{8080}}, sockdiag.TimeWait)
package sockdiag

import (
	"fmt"
	"net/netip"
)

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
	// Unread is what the socket received and its owner has not read;
	// Unacked what it sent and the peer has not acknowledged
	// (inet_diag_msg's rqueue and wqueue, ss's Recv-Q and Send-Q).
	Unread, Unacked uint32
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

// Filter selects sockets by where they are: a socket matches when its
// local port is one of LocalPorts (any local address) or its peer is one of
// Peers (address and port, an IPv4 address written plain, as Socket
// reports it; it also matches a socket that holds it IPv4-mapped). An
// empty Filter matches nothing.
type Filter struct {
	LocalPorts []uint16
	Peers      []netip.AddrPort
}

// Match reports whether s matches f: the same test the kernel applies.
func (f *Filter) Match(s Socket) bool {
	return f.matcher()(s)
}

// matcher is Match for many sockets: the ports and peers in sets.
func (f *Filter) matcher() func(Socket) bool {
	ports := make(map[uint16]bool, len(f.LocalPorts))
	for _, p := range f.LocalPorts {
		ports[p] = true
	}
	peers := make(map[netip.AddrPort]bool, len(f.Peers))
	for _, ap := range f.Peers {
		peers[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
	}
	return func(s Socket) bool { return ports[s.Local.Port()] || peers[s.Peer] }
}

// String is the state's name as ss prints it.
func (s State) String() string {
	names := [...]string{1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
		6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return fmt.Sprintf("state %d", uint8(s))
}
