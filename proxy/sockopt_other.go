//go:build !linux

package proxy

import (
	"errors"
	"net"
)

var errUnsupported = errors.New("unsupported on this platform")

// sendQueue is not available here: a safe reset then always falls back to a
// FIN, which never destroys undelivered bytes.
func sendQueue(c *net.TCPConn) (int, error) { return 0, errUnsupported }

// infoReader stands in for TCP_INFO, not available here.
type infoReader struct{}

// progress is not available here: timers treat every period as silent.
func (*infoReader) progress(c *net.TCPConn) uint64 { return 0 }

func (*infoReader) awaitingReply(c *net.TCPConn) bool { return false }

func resetByPeer(c *net.TCPConn) bool { return false }

// keepAliveListenConfig leaves keep-alive to Go, which sets it on each accepted
// connection.
func keepAliveListenConfig() net.ListenConfig { return net.ListenConfig{} }
