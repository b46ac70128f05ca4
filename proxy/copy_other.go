//go:build !linux

package proxy

import (
	"io"
	"net"
)

// relayCopy copies src to dst until src's EOF (nil) or an error.
func relayCopy(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }
