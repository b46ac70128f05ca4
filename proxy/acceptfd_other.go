//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
)

var errNoBareAccept = errors.New("bare accept: not supported on this system")

// acceptFD is Linux only; there are no relay loops elsewhere either, so
// no session asks for it.
func acceptFD(*os.File) (int, netip.AddrPort, error) {
	return -1, netip.AddrPort{}, errNoBareAccept
}

func bareWaiter(net.Listener) (*os.File, error) { return nil, nil }

func localFD(int, netip.AddrPort) netip.AddrPort { return netip.AddrPort{} }

func fdConn(int) (*net.TCPConn, error) { return nil, errNoBareAccept }
