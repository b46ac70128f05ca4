package proxy

import (
	"errors"
	"syscall"
)

// isTemporary reports accept errors that pass: out of file descriptors or
// memory, or a connection aborted before it was accepted.
func isTemporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
