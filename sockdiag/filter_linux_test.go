package sockdiag

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/procnet"
)

// leaveTimeWait dials ln at addr and closes that connection, the server
// first when serverFirst (TIME-WAIT on ln's port) or else the client
// (TIME-WAIT toward ln), and returns the socket that holds the TIME-WAIT.
func leaveTimeWait(t testing.TB, ln net.Listener, addr string, serverFirst bool) Socket {
	t.Helper()
	local, peer := loopback.TimeWait(t, ln, addr, serverFirst)
	return Socket{State: TimeWait, Local: local, Peer: peer}
}

func listen(t testing.TB, network, address string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, address, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) uint16 { return loopback.AddrPort(ln.Addr()).Port() }

// The kernel's selection equals the same filter applied here to every
// socket: TIME-WAIT on a listener's port (IPv4, IPv6, and IPv4 accepted
// by a dual-stack listener, held IPv4-mapped), toward a backend (IPv4 and
// IPv6), and none of the sockets that match neither.
func TestListMatchingSelectsInKernel(t *testing.T) {
	front4, front6 := listen(t, "tcp4", "127.0.0.1:0"), listen(t, "tcp6", "[::1]:0")
	dual := listen(t, "tcp", "[::]:0")
	back4, back6 := listen(t, "tcp4", "127.0.0.1:0"), listen(t, "tcp6", "[::1]:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	mark := procnet.MarkTimeWaitOverflow()
	f := &Filter{
		LocalPorts: []uint16{port(front4), port(front6), port(dual)},
		Peers:      []netip.AddrPort{loopback.AddrPort(back4.Addr()), loopback.AddrPort(back6.Addr())},
	}
	wanted := []Socket{
		leaveTimeWait(t, front4, front4.Addr().String(), true),
		leaveTimeWait(t, front6, front6.Addr().String(), true),
		leaveTimeWait(t, dual, fmt.Sprintf("127.0.0.1:%d", port(dual)), true),
		leaveTimeWait(t, back4, back4.Addr().String(), false),
		leaveTimeWait(t, back6, back6.Addr().String(), false),
	}
	unwanted := []Socket{
		leaveTimeWait(t, other, other.Addr().String(), false),
		leaveTimeWait(t, other, other.Addr().String(), true),
	}
	all := waitTimeWait(t, append(wanted, unwanted...), mark)
	got, err := ListMatching(f, TimeWait)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		if !f.Match(s) {
			t.Errorf("kernel selected %v → %v, which the filter does not match", s.Local, s.Peer)
		}
	}
	for _, s := range wanted {
		if !contains(got, s) {
			t.Errorf("kernel left out %v → %v", s.Local, s.Peer)
		}
	}
	for _, s := range unwanted {
		if contains(got, s) {
			t.Errorf("kernel selected %v → %v", s.Local, s.Peer)
		}
	}
	// Every matching socket of the full listing, also older ones on these
	// ports (a listener may bind a port that still has TIME-WAIT sockets).
	for _, s := range all {
		if f.Match(s) && !contains(got, s) {
			t.Errorf("kernel left out %v → %v (in the full listing)", s.Local, s.Peer)
		}
	}
}

// waitTimeWait returns the full TIME-WAIT listing once it holds every one
// of socks: a connection enters TIME-WAIT when its last ACK is handled,
// which a loaded host may do after Close returns, so poll with a deadline.
func waitTimeWait(t testing.TB, socks []Socket, mark procnet.OverflowMark) []Socket {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		all, err := List(TimeWait)
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, s := range socks {
			if !contains(all, s) {
				missing++
			}
		}
		if missing == 0 {
			return all
		}
		if time.Now().After(deadline) {
			if d, ok := mark.Covers(missing); ok {
				t.Skipf("%d of %d sockets not in TIME-WAIT after 3s: the kernel destroyed %d meanwhile (TCPTimeWaitOverflow), the host's table full", missing, len(socks), d)
			}
			t.Fatalf("%d of %d sockets not in TIME-WAIT after 3s", missing, len(socks))
		}
	}
}

func contains(socks []Socket, s Socket) bool {
	for _, x := range socks {
		if x.Local == s.Local && x.Peer == s.Peer && x.State == s.State {
			return true
		}
	}
	return false
}

// The kernel accepts the filter as compiled (an invalid one fails the
// dump with EINVAL, which ListMatching would hide behind its fallback),
// for one condition, several, and both families.
func TestBytecodeAccepted(t *testing.T) {
	peers := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("[2001:db8::1]:443")}
	for _, f := range []*Filter{
		{LocalPorts: []uint16{8080}},
		{Peers: peers[:1]},
		{LocalPorts: []uint16{8080, 8081}, Peers: peers},
	} {
		for _, family := range families {
			bc, conds := bytecode(f, family)
			if conds == 0 {
				continue
			}
			if _, err := dump(family, stateMask([]State{TimeWait}), bc); err != nil {
				t.Errorf("filter %+v, family %d: %v", f, family, err)
			}
		}
	}
}

// A filter for a family that none of its conditions can match skips that
// family's dump; one too large to compile is matched here instead.
func TestBytecodeLimits(t *testing.T) {
	v6 := &Filter{Peers: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:443")}}
	if bc, conds := bytecode(v6, unix.AF_INET); bc != nil || conds != 0 {
		t.Errorf("IPv6 peer in an IPv4 dump: %d conditions, %d bytes; want none", conds, len(bc))
	}
	huge := &Filter{}
	for p := range 5000 {
		huge.LocalPorts = append(huge.LocalPorts, uint16(10000+p))
	}
	if bc, conds := bytecode(huge, unix.AF_INET); bc != nil || conds != 5000 {
		t.Errorf("5000 ports: %d conditions, %d bytes; want 5000 and no bytecode", conds, len(bc))
	}
	if _, err := ListMatching(huge, TimeWait); err != nil {
		t.Errorf("ListMatching without kernel filter: %v", err)
	}
}

// How much the kernel filter saves on this host: compare with
// BenchmarkListAll (the saving grows with the host's TIME-WAIT count).
func BenchmarkListMatching(b *testing.B) {
	f := &Filter{LocalPorts: []uint16{8080}, Peers: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80")}}
	for b.Loop() {
		if _, err := ListMatching(f, TimeWait); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListAll(b *testing.B) {
	f := &Filter{LocalPorts: []uint16{8080}, Peers: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80")}}
	for b.Loop() {
		socks, err := List(TimeWait)
		if err != nil {
			b.Fatal(err)
		}
		Count(socks, f.matcher())
	}
}
