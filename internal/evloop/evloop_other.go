//go:build !linux

package evloop

import "net/netip"

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
