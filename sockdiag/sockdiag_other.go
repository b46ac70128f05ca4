//go:build !linux

package sockdiag

import (
	"errors"
	"fmt"
	"net/netip"
)

var errNotLinux = fmt.Errorf("sockdiag: listing sockets needs Linux sock_diag: %w", errors.ErrUnsupported)

// List is Linux-only: sock_diag is a Linux interface.
func List(states ...State) ([]Socket, error) {
	return nil, errNotLinux
}

// ListMatching is Linux-only: sock_diag is a Linux interface.
func ListMatching(f *Filter, states ...State) ([]Socket, error) {
	return nil, errNotLinux
}

// Find is Linux-only: sock_diag is a Linux interface.
func Find(local, peer netip.AddrPort) (Socket, bool, error) {
	return Socket{}, false, errNotLinux
}
