//go:build !linux

package sockdiag

import (
	"errors"
	"fmt"
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
