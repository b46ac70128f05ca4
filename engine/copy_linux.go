package engine

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// chunkSize is the buffer a direction reads into before it knows whether
// it carries a bulk stream: HAProxy's bufsize. A read that fills it
// switches the direction to splice (HAProxy's splice-auto).
const chunkSize = 16 << 10

// spliceMax is what one splice asks to move; the pipe's capacity caps it.
const spliceMax = 1 << 20

// A splice moves at most what its pipe holds, 64 KiB by default, so with
// many bulk streams a relay spends its time in splice calls: 64 streams
// moved 1.4-1.7x the bytes through pipes of 256 KiB. But every pipe page
// counts against its user's fs.pipe-user-pages-soft (64 MiB by default,
// shared with every other process of that user outside CAP_SYS_RESOURCE),
// past which the kernel gives every new pipe two pages. So a bulk
// direction's pipe grows to bigPipe only while the process holds fewer
// than bigPipes grown ones (16 MiB in all); the others keep the default.
const (
	bigPipe  = 256 << 10
	bigPipes = 64
)

// grownPipes counts the pipes grown to bigPipe that are open.
var grownPipes atomic.Int32

// splicePipe is a bulk direction's pipe, non-blocking, made when bulk
// starts and closed when the direction ends.
type splicePipe struct {
	r, w  int  // read end, write end; -1 while there is none
	grown bool // it holds a share of the grown-pipe budget
}

func noPipe() splicePipe { return splicePipe{r: -1, w: -1} }

func (p *splicePipe) ok() bool { return p.r >= 0 }

// open makes the pipe, grown to bigPipe if the budget allows.
func (p *splicePipe) open() error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("pipe2", err)
	}
	*p = splicePipe{r: fds[0], w: fds[1]}
	if grownPipes.Add(1) <= bigPipes {
		if _, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, bigPipe); err == nil {
			p.grown = true
			return nil
		}
	}
	grownPipes.Add(-1) // over budget, or the kernel refused: the default size
	return nil
}

// close closes the pipe, if any, and gives back its share of the budget.
func (p *splicePipe) close() {
	if !p.ok() {
		return
	}
	_ = rawClose(p.r)
	_ = rawClose(p.w)
	if p.grown {
		grownPipes.Add(-1)
	}
	*p = noPipe()
}

// chunks keeps the buffers of chunks between reads. Not a sync.Pool: each
// collection empties one, and a short connection takes a buffer for every
// read (one that finds nothing gives it back at once), so at a few
// thousand connections a second most reads allocated and zeroed 16 KiB and
// drove the collections that emptied the pool. A buffer is held only
// from a read to its write, so the list holds at most what was in flight
// at once, capped.
var chunks chunkList

type chunkList struct {
	mu   sync.Mutex
	free []*[chunkSize]byte
}

// maxFreeChunks caps the buffers kept for reuse: 4 MiB.
const maxFreeChunks = 256

func (l *chunkList) Get() *[chunkSize]byte {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return b
	}
	l.mu.Unlock()
	return new([chunkSize]byte)
}

func (l *chunkList) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.free)
}

func (l *chunkList) Put(b *[chunkSize]byte) {
	l.mu.Lock()
	if len(l.free) < maxFreeChunks {
		l.free = append(l.free, b)
	}
	l.mu.Unlock()
}

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
//
// f, when not nil, is told of every read and write, for the executor.
// writeFailedHook, when set (tests), is called by a copier whose write
// failed, before it reports.
var writeFailedHook func()

func relayCopy(dst, src *net.TCPConn, f *flow) (int64, error) { return copyStream(dst, src, -1, f) }

// CopyN copies exactly n bytes from src to dst as the relay does, never
// reading past them; like io.CopyN, fewer mean io.EOF.
func CopyN(dst, src *net.TCPConn, n int64) (int64, error) {
	written, err := copyStream(dst, src, n, nil)
	if err == nil && written < n {
		err = io.EOF
	}
	return written, err
}

// copier is one direction's state. Its callbacks for the raw sockets are
// bound once, so that relaying a chunk or a splice allocates nothing (a
// closure per call would escape to the heap).
type copier struct {
	rs, ws  syscall.RawConn
	buf     *[chunkSize]byte // the chunk being relayed; nil while waiting
	pipe    splicePipe       // once bulk starts
	want    int              // what the next read or splice may move
	n       int              // what it moved
	errno   error
	readFn  func(fd uintptr) bool
	inFn    func(fd uintptr) bool
	outFn   func(fd uintptr) bool
	inPipe  int   // bytes in the pipe, not yet written
	written int64 // bytes written to dst
	limit   int64 // bytes to copy in all; negative: until EOF
	flow    *flow // nil: nobody watches
}

// copyStream copies src to dst until src's EOF, an error or, unless limit
// is negative, limit bytes.
func copyStream(dst, src *net.TCPConn, limit int64, f *flow) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	ws, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	c := &copier{rs: rs, ws: ws, pipe: noPipe(), limit: limit, flow: f}
	c.readFn, c.inFn, c.outFn = c.read, c.spliceIn, c.spliceOut
	defer c.pipe.close()
	for c.more() {
		n, err := c.readChunk(c.room(chunkSize))
		if err != nil || n == 0 { // n == 0: EOF
			if err == nil {
				c.flow.eof()
			}
			c.dropBuf()
			return c.written, err
		}
		c.flow.writing()
		m, err := dst.Write(c.buf[:n])
		c.flow.wrote()
		chunks.Put(c.buf)
		c.buf = nil
		c.written += int64(m)
		if err != nil {
			if writeFailedHook != nil {
				writeFailedHook()
			}
			return c.written, writeError{err}
		}
		if n == chunkSize && c.more() && c.pipe.open() == nil {
			return c.written, c.splice()
		}
		// a short chunk, or no pipe to be had (out of descriptors): go on
		// with chunks
	}
	return c.written, nil
}

func (c *copier) more() bool { return c.limit < 0 || c.written < c.limit }

// room caps want at what is left of the limit.
func (c *copier) room(want int) int {
	if c.limit >= 0 {
		return int(min(int64(want), c.limit-c.written))
	}
	return want
}

// readChunk waits until src is readable, then reads once, at most want
// bytes, into a pooled buffer (c.buf); a wait holds no buffer. n == 0 is
// EOF.
func (c *copier) readChunk(want int) (int, error) {
	c.want = want
	if err := c.rs.Read(c.readFn); err != nil {
		c.dropBuf()
		return 0, err
	}
	if c.errno != nil {
		c.dropBuf()
		return 0, os.NewSyscallError("read", c.errno)
	}
	if c.n > 0 {
		c.flow.read()
	}
	return c.n, nil
}

func (c *copier) read(fd uintptr) bool {
	b := chunks.Get()
	c.flow.reading(true)
	defer c.flow.reading(false)
	n, err := ignoringEINTR(func() (int, error) { return rawRecv(int(fd), b[:c.want]) })
	if err == unix.EAGAIN {
		chunks.Put(b) // wait without a buffer
		return false
	}
	c.buf, c.n, c.errno = b, max(n, 0), err
	if err == unix.ECONNRESET {
		if readResetHook != nil {
			readResetHook()
		}
		c.flow.resetRead()
	}
	return true
}

// readResetHook, when set (tests), is called as a copier's read has met
// the peer's reset and not yet noted it.
var readResetHook func()

func (c *copier) dropBuf() {
	if c.buf != nil {
		chunks.Put(c.buf)
		c.buf = nil
	}
}

// splice moves src to dst through the pipe until src's EOF, an error or
// the limit.
func (c *copier) splice() error {
	for c.more() {
		c.want = c.room(spliceMax)
		if err := c.rs.Read(c.inFn); err != nil {
			return err
		}
		if c.errno != nil {
			return os.NewSyscallError("splice", c.errno)
		}
		if c.n == 0 {
			c.flow.eof()
			return nil
		}
		c.flow.read()
		c.inPipe = c.n
		c.flow.writing()
		for c.inPipe > 0 {
			if err := c.ws.Write(c.outFn); err != nil {
				return writeError{err}
			}
			if c.errno != nil {
				if writeFailedHook != nil {
					writeFailedHook()
				}
				return writeError{os.NewSyscallError("splice", c.errno)}
			}
			if c.n == 0 {
				return errors.New("splice: pipe empty before its bytes were written")
			}
			c.inPipe -= c.n
			c.written += int64(c.n)
		}
		c.flow.wrote()
	}
	return nil
}

// spliceIn fills the (empty) pipe from the socket: EAGAIN can only mean
// the socket, the pipe being empty.
func (c *copier) spliceIn(fd uintptr) bool {
	c.flow.reading(true)
	defer c.flow.reading(false)
	n, err := ignoringEINTR(func() (int, error) {
		return rawSplice(int(fd), c.pipe.w, c.want)
	})
	c.n, c.errno = max(n, 0), err
	if err == unix.ECONNRESET {
		c.flow.resetRead()
	}
	return err != unix.EAGAIN
}

// spliceOut empties the pipe into the socket: the pipe holds bytes, so
// EAGAIN can only mean the socket.
func (c *copier) spliceOut(fd uintptr) bool {
	n, err := ignoringEINTR(func() (int, error) {
		return rawSplice(c.pipe.r, int(fd), c.inPipe)
	})
	c.n, c.errno = max(n, 0), err
	return err != unix.EAGAIN
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
