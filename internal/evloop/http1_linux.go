package evloop

import (
	"bufio"
	"bytes"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/http1"
)

// In http1 mode (Config.HTTP1) a loop serves each client connection as a
// state machine of exchanges, on the loop, with no goroutine: it reads a
// request head into a pooled buffer, parses it with package http1 (the
// proxy's own parser and head rewrite), writes it to a backend connection
// taken from the loop's idle list (or dialed raw), parses the response
// head, writes head and buffered body to the client in one writev, relays
// the rest of a Content-Length body, and puts the backend connection back.
// An idle backend connection stays registered: any edge on it (bytes the
// backend should not send, its FIN) closes it, so none is checked at
// take. It is the shape an http1 session on the proxy's loops would have,
// built to measure what that costs before building it there.
//
// Prototype limits: requests without a body (others get a 501), responses
// of known length or none (chunked and close-delimited ones cut the
// exchange), no 1xx, no upgrade, no timeouts, no records. A backend
// connection reused from the idle list that ends before the response's
// first byte is redialed once, as the proxy retries an idempotent request.

// hclient is one client connection in http1 mode.
type hclient struct {
	fd      int32
	rd, wr  bool
	rdhup   bool   // an edge said the client's FIN is in: read on to EOF
	in      []byte // request bytes read and not yet handled; pooled, nil while idle
	inN     int
	out     held   // response bytes the socket would not take
	be      *hback // the exchange's backend connection
	req     *http1.Request
	closing bool // the exchange's answer is the last: then a FIN
	finSent bool
	eof     bool
	ended   bool
}

// hback is one backend connection: owned by a client's exchange, or idle.
type hback struct {
	fd        int32
	rd, wr    bool
	rdhup     bool
	connected bool
	reused    bool     // taken from the idle list for this exchange
	owner     *hclient // nil while idle
	in        []byte   // response head bytes until parsed; pooled
	inN       int
	out       held // request bytes the socket would not take
	resp      *http1.Response
	remain    int64 // body bytes still to relay
}

var headEnd = []byte("\r\n\r\n")

// held is bytes a socket would not take, in a buffer from the loop's pool
// (or a larger one).
type held struct {
	buf      []byte
	off, end int
}

func (h *held) pending() bool { return h.end > h.off }

// keep holds p and q from byte w on (the first w were written).
func (h *held) keep(l *loop, w int, p, q []byte) {
	if rest := len(p) + len(q) - w; rest > 0 {
		h.buf, h.off = l.bufFor(rest), 0
		if w < len(p) {
			h.end = copy(h.buf, p[w:])
			h.end += copy(h.buf[h.end:], q)
		} else {
			h.end = copy(h.buf, q[w-len(p):])
		}
	}
}

// flush writes what h holds while fd is writable (EAGAIN clears *wr) and
// gives the buffer back once all is written; done says nothing is held.
func (h *held) flush(l *loop, fd int32, wr *bool) (done bool, err error) {
	for h.pending() {
		if !*wr {
			return false, nil
		}
		n, err := rawWrite(fd, h.buf[h.off:h.end])
		switch {
		case err == unix.EAGAIN:
			*wr = false
			return false, nil
		case err != nil:
			return false, err
		}
		h.off += n
	}
	l.putBuf(h.buf)
	*h = held{}
	return true, nil
}

// h1state is the loop's http1 mode: its connections by descriptor, the
// idle backend connections, and one reader the parser reads heads through.
type h1state struct {
	clients map[int32]*hclient
	backs   map[int32]*hback
	idle    []*hback
	rdr     bytes.Reader
	br      *bufio.Reader
}

func newH1State() *h1state {
	h := &h1state{clients: map[int32]*hclient{}, backs: map[int32]*hback{}}
	h.br = bufio.NewReaderSize(&h.rdr, bufSize)
	return h
}

// openHTTP1 registers an accepted client; nothing is dialed until its
// first request.
func (l *loop) openHTTP1(cfd int) {
	if err := l.register(cfd); err != nil {
		lingerZero(cfd)
		unix.Close(cfd)
		return
	}
	c := &hclient{fd: int32(cfd), wr: true}
	l.h1.clients[c.fd] = c
	l.srv.live.Add(1)
}

// register adds fd to the loop's epoll set once, edge-triggered.
func (l *loop) register(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	return unix.EpollCtl(int(l.ep.Fd()), unix.EPOLL_CTL_ADD, fd, &ev)
}

// dispatchHTTP1 handles an edge on an http1 descriptor.
func (l *loop) dispatchHTTP1(fd int32, ev uint32) {
	if c := l.h1.clients[fd]; c != nil {
		c.rd = c.rd || ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0
		c.rdhup = c.rdhup || ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		c.wr = c.wr || ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
		l.drive(c)
		return
	}
	b := l.h1.backs[fd]
	if b == nil {
		return
	}
	b.rd = b.rd || ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0
	b.rdhup = b.rdhup || ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	b.wr = b.wr || ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
	switch {
	case b.owner == nil:
		if b.rd { // bytes or a FIN on an idle connection: it is done
			l.closeBack(b, true)
		}
	case !b.connected && b.wr:
		if connectError(int(b.fd)) != nil {
			l.abortClient(b.owner)
			return
		}
		b.connected = true
		l.drive(b.owner)
	default:
		l.drive(b.owner)
	}
}

// drive moves a client connection on as far as its sockets let it.
func (l *loop) drive(c *hclient) {
	for !c.ended {
		if !l.flushClient(c) {
			return
		}
		switch {
		case c.be != nil:
			if !l.exchange(c) {
				return
			}
		case c.closing:
			l.finishClient(c)
			return
		default:
			if !l.readRequest(c) {
				return
			}
		}
	}
}

// readRequest reads until a whole request head is buffered and starts its
// exchange; false: nothing more can happen until an edge.
func (l *loop) readRequest(c *hclient) bool {
	for {
		if c.inN > 0 {
			if i := bytes.Index(c.in[:c.inN], headEnd); i >= 0 {
				return l.startExchange(c, i+len(headEnd))
			}
		}
		switch {
		case c.eof && c.inN == 0: // between requests: the client is done
			l.endClient(c)
			return false
		case c.eof:
			l.abortClient(c) // a head cut short
			return false
		case c.inN == bufSize:
			l.refuse(c, "431 Request Header Fields Too Large")
			return true
		case !c.rd:
			if c.inN == 0 && c.in != nil {
				l.putBuf(c.in) // an idle connection holds no buffer
				c.in = nil
			}
			return false
		}
		if c.in == nil {
			c.in = l.getBuf()
		}
		n, err := rawRead(c.fd, c.in[c.inN:])
		switch {
		case err == unix.EAGAIN:
			c.rd = false
		case err != nil:
			l.abortClient(c)
			return false
		case n == 0:
			c.eof = true
		default:
			if c.inN += n; c.inN < len(c.in) && !c.rdhup {
				c.rd = false // a short read took all there was; a new edge comes with more
			}
		}
	}
}

// startExchange parses the head of n bytes, takes a backend connection and
// sends the head on.
func (l *loop) startExchange(c *hclient, n int) bool {
	l.h1.rdr.Reset(c.in[:n])
	l.h1.br.Reset(&l.h1.rdr)
	req, err := http1.ReadRequest(l.h1.br, http1.Limits{})
	switch {
	case err != nil:
		l.refuse(c, "400 Bad Request")
		return true
	case req.Framing != http1.NoBody || req.Upgrade:
		l.refuse(c, "501 Not Implemented")
		return true
	}
	c.inN = copy(c.in, c.in[n:c.inN])
	c.req, c.closing = req, req.Close
	ok := l.sendRequest(c, l.takeBack())
	if !ok { // none could be dialed, or a reused one the backend had closed
		ok = l.sendRequest(c, l.dialBack())
	}
	if !ok {
		l.refuse(c, "502 Bad Gateway")
	}
	return true
}

// sendRequest hands c's request to b: written now when the socket takes
// it, else kept until it is writable.
func (l *loop) sendRequest(c *hclient, b *hback) bool {
	if b == nil {
		return false
	}
	b.owner, c.be = c, b
	head := c.req.HeadForBackend()
	w := 0
	if b.connected && b.wr {
		var err error
		if w, err = rawWrite(b.fd, head); err == unix.EAGAIN {
			w, b.wr = 0, false
		} else if err != nil {
			w = -1
		}
	}
	if w < 0 {
		l.closeBack(b, true)
		b.owner, c.be = nil, nil
		return false
	}
	b.out.keep(l, w, head, nil)
	return true
}

// exchange moves c's exchange on: the rest of the request, the response
// head, its body. true: the exchange is over (c.be is nil).
func (l *loop) exchange(c *hclient) bool {
	b := c.be
	if !b.connected {
		return false
	}
	if done, err := b.out.flush(l, b.fd, &b.wr); err != nil {
		return l.backFailed(c)
	} else if !done {
		return false
	}
	for {
		if b.resp != nil && b.remain == 0 {
			l.releaseBack(c)
			return true
		}
		if c.out.pending() || !b.rd {
			return false // the client is full, or nothing to read yet
		}
		var buf []byte
		if b.resp == nil {
			if b.in == nil {
				b.in = l.getBuf()
			}
			if b.inN == len(b.in) {
				return l.backFailed(c) // a head larger than the buffer
			}
			buf = b.in[b.inN:]
		} else {
			buf = l.scratch[:min(int64(len(l.scratch)), b.remain)]
		}
		n, err := rawRead(b.fd, buf)
		switch {
		case err == unix.EAGAIN:
			b.rd = false
			continue
		case err != nil || n == 0:
			return l.backFailed(c)
		}
		if n < len(buf) && !b.rdhup {
			b.rd = false
		}
		if b.resp != nil {
			b.remain -= int64(n)
			if !l.toClient(c, buf[:n], nil) {
				return false
			}
			continue
		}
		b.inN += n
		if !l.responseHead(c) {
			return false
		}
	}
}

// responseHead parses a buffered response head and writes it to the
// client with the body bytes read with it; false with the exchange cut
// or ended.
func (l *loop) responseHead(c *hclient) bool {
	b := c.be
	i := bytes.Index(b.in[:b.inN], headEnd)
	if i < 0 {
		return true // more to read
	}
	n := i + len(headEnd)
	l.h1.rdr.Reset(b.in[:n])
	l.h1.br.Reset(&l.h1.rdr)
	resp, err := http1.ReadResponse(l.h1.br, c.req, http1.Limits{})
	if err != nil || resp.Framing != http1.NoBody && resp.Framing != http1.Length || resp.Status < 200 {
		l.abortClient(c) // outside the prototype: cut
		return false
	}
	body := b.in[n:b.inN]
	if int64(len(body)) > resp.Length {
		l.abortClient(c) // more than the response holds
		return false
	}
	b.resp, b.remain = resp, resp.Length-int64(len(body))
	c.closing = c.closing || resp.Close
	ok := l.toClient(c, resp.HeadForClient(c.closing), body)
	b.inN = 0
	l.putBuf(b.in)
	b.in = nil
	return ok
}

// toClient writes p and q to the client in one writev and keeps what it
// would not take; false: the client's socket failed (the session is cut).
func (l *loop) toClient(c *hclient, p, q []byte) bool {
	w := 0
	if c.wr {
		var err error
		if w, err = rawWritev(c.fd, p, q); err == unix.EAGAIN {
			w, c.wr = 0, false
		} else if err != nil {
			l.abortClient(c)
			return false
		}
	}
	c.out.keep(l, w, p, q)
	return true
}

// flushClient writes what the client's socket would not take before;
// false: some is still waiting, or the session was cut.
func (l *loop) flushClient(c *hclient) bool {
	done, err := c.out.flush(l, c.fd, &c.wr)
	if err != nil {
		l.abortClient(c)
	}
	return done
}

// backFailed handles a backend connection that failed or ended before its
// response was whole: a reused one that ended before the first byte is
// redialed once; anything else cuts the client.
func (l *loop) backFailed(c *hclient) bool {
	b := c.be
	retry := b.reused && b.resp == nil && b.inN == 0
	l.closeBack(b, true)
	c.be = nil
	if retry {
		if nb := l.dialBack(); nb != nil && l.sendRequest(c, nb) {
			return true // go on with the new one
		}
	}
	l.abortClient(c)
	return false
}

// releaseBack ends c's exchange and puts its backend connection back on
// the idle list, unless the response said it closes.
func (l *loop) releaseBack(c *hclient) {
	b := c.be
	c.be, c.req = nil, nil
	closing := b.resp.Close || b.rdhup // it said so, or its FIN is in
	// A short read cleared rd; a read that filled its buffer may have left
	// it set with nothing more to read. What comes after the last read
	// raises a new edge, so an idle connection's rd means just that.
	b.owner, b.resp, b.reused, b.rd = nil, nil, false, false
	if closing {
		l.closeBack(b, false)
		return
	}
	l.h1.idle = append(l.h1.idle, b)
}

// takeBack pops the most recently used idle backend connection, or dials.
func (l *loop) takeBack() *hback {
	if n := len(l.h1.idle); n > 0 {
		b := l.h1.idle[n-1]
		l.h1.idle = l.h1.idle[:n-1]
		b.reused = true
		return b
	}
	return l.dialBack()
}

// dialBack connects a new backend connection, raw and non-blocking.
func (l *loop) dialBack() *hback {
	fd, connected, err := dial(l.backend)
	if err != nil {
		return nil
	}
	if err := l.register(fd); err != nil {
		unix.Close(fd)
		return nil
	}
	b := &hback{fd: int32(fd), connected: connected, wr: connected}
	l.h1.backs[b.fd] = b
	return b
}

// closeBack closes a backend connection (with an RST when reset: its
// exchange was cut, or it sent what it should not) and forgets it.
func (l *loop) closeBack(b *hback, reset bool) {
	if l.h1.backs[b.fd] != b {
		return // closed already
	}
	if i := slices.Index(l.h1.idle, b); i >= 0 {
		l.h1.idle = slices.Delete(l.h1.idle, i, i+1)
	}
	if reset {
		lingerZero(int(b.fd))
	}
	l.putBuf(b.in)
	l.putBuf(b.out.buf)
	b.in, b.out = nil, held{}
	delete(l.h1.backs, b.fd)
	l.closing = append(l.closing, int(b.fd))
}

// bufFor is a buffer for n bytes: a pooled one when they fit.
func (l *loop) bufFor(n int) []byte {
	if n <= bufSize {
		return l.getBuf()
	}
	return make([]byte, n)
}

// refuse answers the client with status and ends its connection after it.
func (l *loop) refuse(c *hclient, status string) {
	c.inN, c.closing = 0, true
	msg := "HTTP/1.1 " + status + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	l.toClient(c, []byte(msg), nil)
}

// finishClient sends the client a FIN once its last answer is written,
// then reads (and drops) until its FIN, and closes.
func (l *loop) finishClient(c *hclient) {
	if !c.finSent {
		rawReadings(c.fd, l.cfg.Readings)
		if err := rawShutdownWrite(c.fd); err != nil {
			l.abortClient(c)
			return
		}
		c.finSent = true
	}
	for !c.eof && c.rd {
		n, err := rawRead(c.fd, l.scratch)
		switch {
		case err == unix.EAGAIN:
			c.rd = false
		case err != nil:
			l.abortClient(c)
			return
		case n == 0:
			c.eof = true
		}
	}
	if c.eof {
		l.endClient(c)
	}
}

// abortClient cuts a client connection and its exchange with RSTs.
func (l *loop) abortClient(c *hclient) {
	if c.ended {
		return
	}
	if c.be != nil {
		l.closeBack(c.be, true)
		c.be = nil
	}
	lingerZero(int(c.fd))
	l.endClient(c)
}

func (l *loop) endClient(c *hclient) {
	if c.ended {
		return
	}
	c.ended = true
	if c.be != nil {
		l.closeBack(c.be, true)
		c.be = nil
	}
	l.putBuf(c.in)
	l.putBuf(c.out.buf)
	c.in, c.out = nil, held{}
	delete(l.h1.clients, c.fd)
	l.closing = append(l.closing, int(c.fd))
	l.srv.live.Add(-1)
}

// releaseHTTP1 cuts every http1 connection when the loop stops.
func (l *loop) releaseHTTP1() {
	for _, c := range l.h1.clients {
		l.abortClient(c)
	}
	for _, b := range l.h1.backs {
		l.closeBack(b, true)
	}
}
