package demo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// needKernel fails unless this host lists sockets through sock_diag: the
// demo's whole point is to check the records against the kernel.
func needKernel() error {
	if _, err := sockdiag.List(sockdiag.TimeWait); err != nil {
		return fmt.Errorf("the demo counts TIME-WAIT with Linux sock_diag: %w", err)
	}
	return nil
}

// closing are the states of a socket still on its way to TIME-WAIT (or to
// nothing): while one of a row's sockets is in one, its count is not final.
var closing = []sockdiag.State{sockdiag.FinWait1, sockdiag.FinWait2, sockdiag.Closing, sockdiag.LastAck, sockdiag.CloseWait}

// settle waits until none of socks is still closing. The kernel offers no
// event for this: it polls, with a deadline, and on the deadline names the
// sockets still closing, whose they are and their state.
func settle(ctx context.Context, socks map[tuple]holder, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := states(socks)
		if err != nil {
			return fmt.Errorf("look up the row's sockets: %w", err)
		}
		var busy []string
		for t, s := range st {
			if slices.Contains(closing, s) {
				busy = append(busy, fmt.Sprintf("%s %s→%s %s", socks[t], t.local, t.peer, s))
			}
		}
		if len(busy) == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			slices.Sort(busy)
			return fmt.Errorf("%d sockets of the row still closing after %s: %s", len(busy), timeout, strings.Join(busy[:min(len(busy), 4)], ", "))
		case <-ctx.Done():
			return fmt.Errorf("wait for sockets to settle: %w", ctx.Err())
		}
	}
}

// states looks each of socks up by its 4-tuple and returns the state of
// those that exist. Lookups, not a dump of the host's sockets: a dump can
// skip a socket while others come and go (see sockdiag.Find), and on a
// busy host TIME-WAIT sockets of earlier runs expire all the time.
func states(socks map[tuple]holder) (map[tuple]sockdiag.State, error) {
	out := make(map[tuple]sockdiag.State, len(socks))
	for t := range socks {
		s, ok, err := sockdiag.Find(t.local, t.peer)
		if err != nil {
			return nil, err
		}
		if ok {
			out[t] = s.State
		}
	}
	return out, nil
}

// snapshot is what the kernel holds of a row's sockets, by 4-tuple, as
// the matcher needs it.
type snapshot struct {
	timeWait map[tuple]bool
	// live is every socket in another state: a 4-tuple of a record found
	// here was taken over by a newer connection.
	live map[tuple]bool
	// accepts is the connections the row's backend accepted, by the
	// proxy's address: more than the records name means a connection
	// with no record (a probe, a warm pool's) took a back leg's 4-tuple,
	// and with it the backend's TIME-WAIT, and may be gone already.
	accepts map[netip.AddrPort]int
	// strays is the TIME-WAIT sockets on the row's addresses that none of
	// its sockets is.
	strays int
}

// takeSnapshot looks up the row's sockets, then counts the strays on its
// addresses.
func takeSnapshot(socks map[tuple]holder, addrs ...netip.AddrPort) (snapshot, error) {
	st, err := states(socks)
	if err != nil {
		return snapshot{}, fmt.Errorf("look up the row's sockets: %w", err)
	}
	k := snapshot{timeWait: map[tuple]bool{}, live: map[tuple]bool{}}
	for t, s := range st {
		if s == sockdiag.TimeWait {
			k.timeWait[t] = true
		} else {
			k.live[t] = true
		}
	}
	list, err := sockdiag.List(sockdiag.TimeWait)
	if err != nil {
		return snapshot{}, fmt.Errorf("list TIME-WAIT sockets: %w", err)
	}
	held := make(map[tuple]bool, len(list))
	for _, s := range list {
		held[tuple{s.Local, s.Peer}] = true
	}
	k.strays = strays(held, socks, addrs...)
	return k, nil
}

// strays counts the TIME-WAIT sockets on a row's listening addresses that
// none of its connections names: a connection without a record, or
// (rarely: the row's ports are new) a leftover of an earlier run.
func strays(held map[tuple]bool, known map[tuple]holder, addrs ...netip.AddrPort) int {
	n := 0
	for t := range held {
		if _, ok := known[t]; ok {
			continue
		}
		for _, a := range addrs {
			if t.local == a || t.peer == a {
				n++
				break
			}
		}
	}
	return n
}
