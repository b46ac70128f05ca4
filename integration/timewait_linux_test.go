package integration

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Socket is one TCP socket as `ss` shows it inside a namespace.
type Socket struct {
	State       string // as ss spells it: ESTAB, TIME-WAIT, FIN-WAIT-2, …
	Local, Peer netip.AddrPort
}

// countTimeWait counts the TIME-WAIT sockets namespace ns holds that match
// the ss filter expression (e.g. "sport = :8080", "dport = :80"; "" for
// all), via `ss -Htan state time-wait FILTER`.
func countTimeWait(t testing.TB, topo *Topology, ns, filter string) int {
	t.Helper()
	return len(timeWaitSockets(t, topo, ns, filter))
}

// timeWaitSockets lists the TIME-WAIT sockets ns holds that match filter,
// so a test can split them by leg (by local or peer port and address).
func timeWaitSockets(t testing.TB, topo *Topology, ns, filter string) []Socket {
	t.Helper()
	return sockets(t, topo, ns, "time-wait", filter)
}

// sockets lists the TCP sockets of ns in the given ss state ("all",
// "time-wait", "established", …) that match filter. LISTEN sockets are left
// out: their peer is "0.0.0.0:*", and waitListening covers them.
func sockets(t testing.TB, topo *Topology, ns, state, filter string) []Socket {
	t.Helper()
	args := append([]string{"ss", "-Htan", "state", state}, strings.Fields(filter)...)
	out := topo.Exec(t, ns, args...)
	var socks []Socket
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" || strings.HasPrefix(line, "LISTEN ") {
			continue
		}
		s, ok := parseSSLine(line, state)
		if !ok {
			t.Fatalf("in %s: cannot parse ss line %q", ns, line)
		}
		socks = append(socks, s)
	}
	return socks
}

// parseSSLine reads one line of `ss -Htan`. With a single state in the
// filter ss leaves the State column out, so the state asked for fills in.
//
//	TIME-WAIT 0 0 10.231.1.1:40312 10.231.2.1:80
//	0 0 10.231.1.1:40312 10.231.2.1:80
func parseSSLine(line, state string) (Socket, bool) {
	f := strings.Fields(line)
	var s Socket
	if len(f) >= 5 {
		s.State, f = f[0], f[1:]
	} else {
		s.State = strings.ToUpper(state)
	}
	if len(f) < 4 {
		return s, false
	}
	var err1, err2 error
	s.Local, err1 = netip.ParseAddrPort(f[2])
	s.Peer, err2 = netip.ParseAddrPort(f[3])
	return s, err1 == nil && err2 == nil
}

// transient are the states a closing (or opening) connection passes
// through; a settled host has none left.
var transient = map[string]bool{
	"SYN-SENT": true, "SYN-RECV": true, "FIN-WAIT-1": true, "FIN-WAIT-2": true,
	"CLOSE-WAIT": true, "LAST-ACK": true, "CLOSING": true,
}

// waitTCPSettled waits until no socket in ns is opening or closing, so the
// TIME-WAIT counts that follow are final: a client that closed first returns
// from close() while its socket is still in FIN-WAIT, before it reaches
// TIME-WAIT. Polling the kernel is the only way to see this; the deadline
// bounds it. It returns the sockets left (ESTAB, TIME-WAIT).
func waitTCPSettled(t testing.TB, topo *Topology, ns string, timeout time.Duration) []Socket {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		socks := sockets(t, topo, ns, "all", "")
		var busy []Socket
		for _, s := range socks {
			if transient[s.State] {
				busy = append(busy, s)
			}
		}
		if len(busy) == 0 {
			return socks
		}
		if time.Now().After(deadline) {
			t.Fatalf("in %s: %d sockets still opening or closing after %v, e.g. %+v", ns, len(busy), timeout, busy[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sockstatTW reads the "tw" figure of the TCP line of /proc/net/sockstat
// inside ns: the kernel's own TIME-WAIT count for that namespace, the figure
// closeproxy's auto placement watches.
func sockstatTW(t testing.TB, topo *Topology, ns string) int {
	t.Helper()
	out := topo.Exec(t, ns, "cat", "/proc/net/sockstat")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				n, err := strconv.Atoi(f[i+1])
				if err != nil {
					t.Fatalf("sockstat in %s: tw %q: %v", ns, f[i+1], err)
				}
				return n
			}
		}
	}
	t.Fatalf("sockstat in %s: no TCP tw figure in %q", ns, out)
	return 0
}
