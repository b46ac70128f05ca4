//go:build !linux

package engine

import "context"

// loops are not available here: Relay always refuses, and the caller
// relays on goroutines.
type loops struct{}

func newLoops(int, <-chan struct{}, <-chan struct{}) (*loops, error) { return &loops{}, nil }

func (*loops) relay(int, *Session, Socket, Socket, Pending, func()) error { return errUnsupported }

func (*loops) connect(context.Context, int) (int, error) { return -1, errUnsupported }

func (*loops) forget(int, int) {}

func (*loops) place(on int) int { return on }

func (*loops) begin() {}

func (*loops) close() {}

// readThrough: no loops, no socket of theirs.
func readThrough(sock) (uint64, bool) { return 0, false }
