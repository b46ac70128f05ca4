package engine

import "net"

type loops struct{}

func newLoops(int, <-chan struct{}, <-chan struct{}) (*loops, error) { return &loops{}, nil }

func (*loops) relay(*Session, *net.TCPConn, *net.TCPConn, Pending, func()) error {
	return ErrLoopsClosed
}

func (*loops) close() {}
