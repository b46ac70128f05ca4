//go:build !linux

package engine

import "net"

// loops are not available here: Relay always refuses, and the caller
// relays on goroutines.
type loops struct{}

func newLoops(int, <-chan struct{}, <-chan struct{}) (*loops, error) { return &loops{}, nil }

func (*loops) relay(*Session, *net.TCPConn, *net.TCPConn, Pending, func()) error {
	return errUnsupported
}

func (*loops) relayFD(*Session, int, *net.TCPConn, Pending, func()) error {
	return errUnsupported
}

func (*loops) close() {}
