//go:build !linux

package proxy

import "net"

// keepAliveListenConfig leaves keep-alive to Go, which sets it on each accepted
// connection.
func keepAliveListenConfig() net.ListenConfig { return net.ListenConfig{} }
