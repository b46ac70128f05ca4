//go:build !linux

package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/pool"
)

var errNoBare = errors.New("bare sockets: not supported on this system")

// acceptFD is Linux only; there are no relay loops elsewhere either, so
// no session asks for it.
func acceptFD(*os.File) (int, netip.AddrPort, error) {
	return -1, netip.AddrPort{}, errNoBare
}

func bareWaiter(net.Listener) (*os.File, error) { return nil, nil }

// listenOnLoops: a goroutine accepts (there are no relay loops here).
func (*Server) listenOnLoops(*listener) bool { return false }

func dialBare(context.Context, *engine.Loops, netip.AddrPort, bool) (*pool.Bare, error) {
	return nil, errNoBare
}

// dialDirect: Go's dialer dials (dialBackend).
func dialDirect(context.Context, netip.AddrPort, netip.Addr, bool) (*net.TCPConn, error) {
	return nil, errors.ErrUnsupported
}

func localFD(int, netip.AddrPort) netip.AddrPort { return netip.AddrPort{} }

func fdConn(int) (*net.TCPConn, error) { return nil, errNoBare }

func (*session) startHTTP1Loop() bool { return false }

func (*session) startTCPIntake() bool { return false }

// takeQueued: nothing is taken; closing the listener resets what its
// accept queue holds.
func takeQueued(net.Listener) []queued { return nil }
