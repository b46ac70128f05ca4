package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// chunkSize is the buffer a direction reads into before it knows whether
// it carries a bulk stream: HAProxy's bufsize. A read that fills it
// switches the direction to splice (HAProxy's splice-auto).
const chunkSize = 16 << 10

// spliceMax is what one splice asks to move; the pipe's capacity caps it.
const spliceMax = 1 << 20

var chunks = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// relayCopy copies src to dst until src's EOF (nil) or an error, like
// io.Copy, but holds nothing while src is silent: it waits for src to be
// readable without a buffer, reads a chunk into a pooled buffer, writes it
// and gives the buffer back. A chunk that fills the buffer marks a bulk
// stream: from then on the direction splices through a pipe of its own,
// made then and closed when the direction ends. So an idle session holds
// its two sockets and no pipe, a small exchange costs one read and one
// write per chunk (not two splices), and no pipe outlives its session
// (Go's own splice keeps its pipes in a pool that only a collection
// empties).
func relayCopy(dst, src *net.TCPConn) (int64, error) { return copyStream(dst, src, -1) }

// relayCopyN copies exactly n bytes from src to dst as relayCopy does,
// never reading past them; like io.CopyN, fewer mean io.EOF.
func relayCopyN(dst, src *net.TCPConn, n int64) (int64, error) {
	written, err := copyStream(dst, src, n)
	if err == nil && written < n {
		err = io.EOF
	}
	return written, err
}

// copyStream copies src to dst until src's EOF, an error or, unless limit
// is negative, limit bytes.
func copyStream(dst, src *net.TCPConn, limit int64) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var written int64
	for limit < 0 || written < limit {
		want := int64(chunkSize)
		if limit >= 0 {
			want = min(want, limit-written)
		}
		buf, n, err := readChunk(rs, int(want))
		if err != nil || n == 0 { // n == 0: EOF
			if buf != nil {
				chunks.Put(buf)
			}
			return written, err
		}
		m, err := dst.Write(buf[:n])
		chunks.Put(buf)
		written += int64(m)
		if err != nil {
			return written, err
		}
		if n == chunkSize && written != limit {
			rest := int64(-1)
			if limit >= 0 {
				rest = limit - written
			}
			m, ok, err := spliceAll(dst, rs, rest)
			written += m
			if ok {
				return written, err
			}
			// no pipe to be had (out of descriptors): go on with chunks
		}
	}
	return written, nil
}

// readChunk waits until src is readable, then reads once, at most want
// bytes, into a pooled buffer; a wait holds no buffer. It returns the buffer (nil after an
// error that came before a read) and n == 0 at EOF.
func readChunk(rs syscall.RawConn, want int) (*[chunkSize]byte, int, error) {
	var buf *[chunkSize]byte
	var n int
	var rerr error
	err := rs.Read(func(fd uintptr) bool {
		b := chunks.Get().(*[chunkSize]byte)
		for {
			n, rerr = unix.Read(int(fd), b[:want])
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			chunks.Put(b) // wait without a buffer
			return false
		}
		buf = b
		return true
	})
	if err != nil {
		return buf, 0, err
	}
	if rerr != nil {
		return buf, 0, os.NewSyscallError("read", rerr)
	}
	return buf, max(n, 0), nil
}

// spliceAll moves src to dst through a pipe of its own until src's EOF, an
// error or, unless limit is negative, limit bytes, and closes the pipe. ok
// is false when no pipe could be made; nothing was moved then.
func spliceAll(dst *net.TCPConn, rs syscall.RawConn, limit int64) (written int64, ok bool, err error) {
	var p [2]int
	if unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
		return 0, false, nil
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	ws, err := dst.SyscallConn()
	if err != nil {
		return 0, true, err
	}
	for limit < 0 || written < limit {
		want := int64(spliceMax)
		if limit >= 0 {
			want = min(want, limit-written)
		}
		n, err := spliceIn(rs, p[1], int(want))
		if err != nil || n == 0 {
			return written, true, err
		}
		m, err := spliceOut(ws, p[0], n)
		written += int64(m)
		if err != nil {
			return written, true, err
		}
	}
	return written, true, nil
}

// spliceIn fills the (empty) pipe from the socket, waiting for it to be
// readable: EAGAIN can only mean the socket, the pipe being empty.
func spliceIn(rs syscall.RawConn, pipeW, want int) (int, error) {
	var n int64
	var serr error
	err := rs.Read(func(fd uintptr) bool {
		for {
			n, serr = unix.Splice(int(fd), nil, pipeW, nil, want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if serr != unix.EINTR {
				break
			}
		}
		return serr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, os.NewSyscallError("splice", serr)
	}
	return int(n), nil
}

// spliceOut empties n bytes of the pipe into the socket, waiting for it to
// be writable: the pipe holds them, so EAGAIN can only mean the socket.
func spliceOut(ws syscall.RawConn, pipeR, n int) (int, error) {
	written := 0
	for written < n {
		var m int64
		var serr error
		err := ws.Write(func(fd uintptr) bool {
			for {
				m, serr = unix.Splice(pipeR, nil, int(fd), nil, n-written, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				if serr != unix.EINTR {
					break
				}
			}
			return serr != unix.EAGAIN
		})
		if err != nil {
			return written, err
		}
		if serr != nil {
			return written, os.NewSyscallError("splice", serr)
		}
		if m == 0 {
			return written, errors.New("splice: pipe empty before its bytes were written")
		}
		written += int(m)
	}
	return written, nil
}
