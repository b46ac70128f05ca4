//go:build !linux

package sockdiag

import "errors"

// List is Linux-only: sock_diag is a Linux interface.
func List(states ...State) ([]Socket, error) {
	return nil, errors.New("sockdiag: listing sockets needs Linux sock_diag")
}
