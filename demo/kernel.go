package demo

import (
	"context"
	"fmt"
	"net/netip"
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
// event for this: it polls sock_diag, with a deadline.
func settle(ctx context.Context, socks map[tuple]bool, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := sockdiag.List(closing...)
		if err != nil {
			return fmt.Errorf("list closing sockets: %w", err)
		}
		busy := sockdiag.Count(list, func(s sockdiag.Socket) bool { return socks[tuple{s.Local, s.Peer}] })
		if busy == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("%d sockets of the row still closing after %s", busy, timeout)
		case <-ctx.Done():
			return fmt.Errorf("wait for sockets to settle: %w", ctx.Err())
		}
	}
}

// snapshot is this host's TCP sockets by 4-tuple, as the matcher needs
// them.
type snapshot struct {
	timeWait map[tuple]bool
	// live is every socket in another state, listeners aside: a 4-tuple
	// of a record found here was taken over by a newer connection.
	live map[tuple]bool
	// accepts is the connections the row's backend accepted, by the
	// proxy's address: more than the records name means a connection
	// with no record (a probe, a warm pool's) took a back leg's 4-tuple,
	// and with it the backend's TIME-WAIT, and may be gone already.
	accepts map[netip.AddrPort]int
}

// Kernel states sockdiag has no name for.
const (
	stateSynSent sockdiag.State = 2
	stateSynRecv sockdiag.State = 3
	stateClose   sockdiag.State = 7
)

var liveStates = append([]sockdiag.State{sockdiag.Established, stateSynSent, stateSynRecv, stateClose}, closing...)

// takeSnapshot lists the TIME-WAIT sockets, then the live ones.
func takeSnapshot() (snapshot, error) {
	tw, err := tuples(sockdiag.TimeWait)
	if err != nil {
		return snapshot{}, fmt.Errorf("list TIME-WAIT sockets: %w", err)
	}
	live, err := tuples(liveStates...)
	if err != nil {
		return snapshot{}, fmt.Errorf("list live sockets: %w", err)
	}
	return snapshot{timeWait: tw, live: live}, nil
}

func tuples(states ...sockdiag.State) (map[tuple]bool, error) {
	list, err := sockdiag.List(states...)
	if err != nil {
		return nil, err
	}
	out := make(map[tuple]bool, len(list))
	for _, s := range list {
		out[tuple{s.Local, s.Peer}] = true
	}
	return out, nil
}

// strays counts the TIME-WAIT sockets on a row's listening addresses that
// none of its connections names: a connection without a record, or
// (rarely: the row's ports are new) a leftover of an earlier run.
func strays(held, known map[tuple]bool, addrs ...netip.AddrPort) int {
	n := 0
	for t := range held {
		if known[t] {
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
