//go:build !linux

package evloop

import (
	"errors"
	"net/netip"
)

// errUnsupported is Start's answer where there is no epoll.
var errUnsupported = errors.New("evloop: event-loop prototype needs Linux (epoll)")

// Server is the prototype's handle; without epoll it cannot start.
type Server struct{}

// Start reports that the prototype needs Linux.
func Start(Config) (*Server, error) { return nil, errUnsupported }

// Addr is the zero address: nothing listens.
func (*Server) Addr() netip.AddrPort { return netip.AddrPort{} }

// Sessions is always 0.
func (*Server) Sessions() int { return 0 }

// Close does nothing.
func (*Server) Close() error { return nil }
