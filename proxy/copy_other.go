//go:build !linux

package proxy

import (
	"io"
	"net"
)

// relayCopy copies src to dst until src's EOF (nil) or an error.
func relayCopy(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }

// relayCopyN copies exactly n bytes from src to dst; fewer mean io.EOF.
func relayCopyN(dst, src *net.TCPConn, n int64) (int64, error) { return io.CopyN(dst, src, n) }
