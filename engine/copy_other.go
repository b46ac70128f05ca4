//go:build !linux

package engine

import (
	"io"
	"net"
)

// relayCopy copies src to dst until src's EOF (nil) or an error; f is told
// of the first read and the last write only.
func relayCopy(dst, src *net.TCPConn, f *flow) (int64, error) {
	n, err := io.Copy(dst, src)
	if n > 0 {
		f.read()
		f.writing()
		f.wrote()
	}
	if err == nil {
		f.eof()
	}
	return n, err
}

// CopyN copies exactly n bytes from src to dst; fewer mean io.EOF.
func CopyN(dst, src *net.TCPConn, n int64) (int64, error) { return io.CopyN(dst, src, n) }
