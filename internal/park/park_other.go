//go:build !linux

package park

import (
	"errors"
	"time"
)

// Parker is not available here: New fails.
type Parker struct{}

// Wait is one parked socket.
type Wait struct{}

// New fails: parking needs epoll.
func New() (*Parker, error) { return nil, errors.ErrUnsupported }

// Park is never reached: there is no Parker.
func (*Parker) Park(int, time.Time, func()) (*Wait, error) { return nil, errors.ErrUnsupported }

// Parked is none.
func (*Parker) Parked() int { return 0 }

// Close does nothing.
func (*Parker) Close() {}

// Wake does nothing.
func (*Wait) Wake() bool { return false }
