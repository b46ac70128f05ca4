package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/http1"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// roundTrip is how one request fared on one backend connection.
type roundTrip struct {
	started  bool  // a response byte went to the client
	retry    bool  // nothing came back and the request is safe to send again
	tunnel   bool  // 101 or CONNECT 2xx: the connection is a tunnel now
	closing  bool  // the front leg ends after this response
	reusable bool  // the backend connection can go back to the pool
	backFIN  bool  // the backend's FIN ended the response
	cutBack  bool  // the backend got part of a request, or its response was cut: reset it
	unused   bool  // nothing was sent on the connection
	early    bool  // an answer came before the request's last bytes were handed over
	err      error // why a retry is wanted
	// moved: the request went on this connection in place of the one
	// the exchange began with (a pooled one its backend closed while a
	// chunked body was held: spill.renew), which is discarded.
	moved *pool.Conn

	// front is how the front leg ends, when the exchange ends it: after
	// the backend connection (afterResponse), as on the loops, so that a
	// front whose end waits (Ending.Deliver) holds no pool slot meanwhile.
	front     engine.Ending
	frontEnds bool
}

// endFront has the front leg end as e once the backend connection is
// dealt with; the first ending asked for holds, as with h1.end.
func (rt *roundTrip) endFront(e engine.Ending) {
	if !rt.frontEnds {
		rt.front, rt.frontEnds = e, true
	}
}

// errBodyCut marks a request body the client had not finished sending when
// the response was complete.
var errBodyCut = errors.New("request body incomplete when the response ended")

// errBodyStalled: the request body's copy was cut as a write the backend
// had not taken for idle_timeout, the proxy's backpressure: the exchange
// stalled, the client was not silent.
var errBodyStalled = fmt.Errorf("%w: the backend took none of it for idle_timeout", errBodyCut)

// errBodySilent: a request body still incomplete once its response
// ended, its client silent for peer_fin_grace: the backend connection,
// which got part of a request, is reset, and the session is not ok.
func errBodySilent(grace time.Duration) error {
	return fmt.Errorf("%w: the client sent none of the rest for peer_fin_grace (%s)", errBodyCut, grace)
}

// exchange carries one request and its response. It reports whether the
// front leg must end after it, and whether the session became a tunnel
// (then it is over). Every way it can end gives the backend connection
// back to the pool or closes it.
func (h *h1) exchange(req *http1.Request) (closing, tunnel bool) {
	attempt := 0
	if h.retried {
		attempt, h.retried = 1, false
	} else {
		h.rec.Unnote(policy.Back, policy.ReasonRetried) // an earlier request's retry
	}
	for ; ; attempt++ {
		bc, err := h.acquire()
		if err != nil {
			h.backendFailed(err)
			return true, false
		}
		// Held as a tcp session's is, until it is given back: a panic
		// meanwhile (session.panicked) discards it and frees its slot.
		h.back = bc
		if exchangeHeldHook != nil {
			exchangeHeldHook()
		}
		if bc.Bare != nil { // dialed for the loops
			if err := h.srv.unbare(bc); err != nil { // out of descriptors
				h.back = nil
				h.sv.pool.Discard(bc)
				h.rec.Outcome(engine.OutcomeError, fmt.Errorf("take a loop's backend connection: %w", err))
				h.writeError(503, "Service Unavailable")
				return true, false
			}
		}
		br := backReaders.Get().(*bufio.Reader)
		br.Reset(backOf(bc).r)
		h.startGuard(bc.TCPConn)
		rt := h.roundTrip(bc, br, req)
		if rt.moved != nil {
			bc = rt.moved
		}
		if stall := h.stopGuard(); stall != engine.NotStalled {
			h.stalled(&rt, stall)
		}
		switch {
		case rt.retry && attempt == 0:
			h.rec.Note(policy.Back, policy.ReasonRetried)
			h.dropBackend(bc, br)
			continue
		case rt.retry: // the second connection failed the same way: once is all
			h.rec.Outcome(engine.OutcomeBackendReset, rt.err)
			h.writeError(502, "Bad Gateway")
		case rt.tunnel:
			h.tunnel(bc, br)
			return true, true
		}
		h.afterResponse(bc, br, rt)
		if rt.frontEnds {
			h.end(rt.front)
		}
		return rt.closing, false
	}
}

// exchangeHeldHook, when set (tests), runs as an exchange on a goroutine
// took its backend connection.
var exchangeHeldHook func()

// stalled: the guard cut the exchange short (idle_timeout with no byte
// moving, or shutdown out of time). A response not begun is answered with
// 504 (503 at shutdown): a whole, honest response. One begun is cut: the
// client gets an RST, never a clean end.
func (h *h1) stalled(rt *roundTrip, why engine.Stall) {
	rt.closing, rt.reusable, rt.retry, rt.cutBack = true, false, false, true
	_ = h.front.SetDeadline(time.Time{})
	o, status, text, err := stall(why, h.ln.IdleTimeout)
	h.rec.Outcome(o, err)
	if rt.started {
		rt.cutFront()
		return
	}
	h.writeError(status, text)
}

// stall is what an exchange the guard cut short ends as: its outcome, the
// answer to a client whose response had not begun, and why.
func stall(why engine.Stall, idle time.Duration) (o engine.Outcome, status int, text string, err error) {
	if why == engine.StalledDrain {
		return engine.OutcomeDrained, 503, "Service Unavailable", errors.New("cut by shutdown: still open when its wait ended (shutdown_timeout, or a second SIGTERM)")
	}
	return engine.OutcomeTimeout, 504, "Gateway Timeout", fmt.Errorf("exchange stalled: no byte moved for idle_timeout %s", idle)
}

// cutFront resets the front leg: a response was cut short.
func (rt *roundTrip) cutFront() {
	rt.endFront(engine.Ending{Cut: true, Why: policy.ReasonCut})
}

// roundTrip sends req on bc and relays the responses to the client.
func (h *h1) roundTrip(bc *pool.Conn, br *bufio.Reader, req *http1.Request) (rt roundTrip) {
	head := req.HeadForBackend()
	var body *bodyCopy
	if req.Framing == http1.Chunked && !req.ExpectContinue {
		ok := h.sendChunked(&rt, bc, req, head)
		if rt.moved != nil {
			bc = rt.moved
			br.Reset(backOf(bc).r)
		}
		if !ok {
			return rt
		}
	} else {
		n, err := writeBack(bc, head, req.Framing == http1.NoBody)
		h.rec.Sent(policy.Back, int64(n))
		h.rec.Request()
		if err != nil {
			h.noResponse(&rt, bc, req, nil, fmt.Errorf("send request to backend: %w", err))
			return rt
		}
		body = h.startBody(bc, req)
	}
	continued := false // a 100 Continue went to the client
	for {
		if _, err := br.Peek(1); err != nil {
			h.noResponse(&rt, bc, req, body, fmt.Errorf("backend closed before responding: %w", err))
			return rt
		}
		resp, err := http1.ReadResponse(br, req, h.lim)
		if err != nil {
			h.badResponse(&rt, body, err)
			return rt
		}
		h.rec.Received(policy.Back, int64(len(resp.Raw)))
		continued = continued || resp.Status == 100
		early := rt.early && resp.Status/100 != 1 // sent whole first (sendChunked): told then
		if body != nil && resp.Status/100 != 1 {
			body.answered.Store(true)
			body.notOwed = req.ExpectContinue && !continued
			// A final answer before the body was all sent (an early 413
			// or 417): as on the loops, the connection is not reused
			// (what the backend sends next answers nothing the proxy
			// sent) and the client is told this one closes. Told by the
			// body's last write being due, noted before the write: an
			// answer to the whole body comes after it began. One written
			// whole before the answer came is told at the exchange's
			// end, by the send queue.
			early = !body.last.Load() && resp.Status != http.StatusSwitchingProtocols
		}
		rt.closing = req.Close || resp.Close || early
		tunnel := resp.Tunnel(req.Method)
		if !rt.closing && !tunnel && h.draining() {
			rt.closing, h.drainClosed = true, true
		}
		// A tunnel's head goes as the backend sent it: the connection
		// carries the tunnel on, and a "close" beside its Connection:
		// Upgrade makes clients refuse the upgrade.
		head, whole := resp.HeadForClient(rt.closing && !tunnel), wholeBody(resp, br, tunnel)
		n, err := h.writeFront(head, whole)
		headN := min(n, len(head))
		h.rec.Sent(policy.Front, int64(headN))
		if n > headN {
			h.rec.Relayed(false, int64(n-headN))
		}
		rt.started = true
		if err != nil {
			h.clientGone(&rt, body, err)
			return rt
		}
		if tunnel {
			// The request body's copy reads the client through h.fr:
			// what it read past the body is the tunnel's first bytes, and
			// the tunnel reads the client only once it is done.
			if err := h.finishBody(body); err != nil {
				rt.closing, rt.cutBack = true, true
				rt.cutFront()
				return rt
			}
			rt.tunnel = true
			return rt
		}
		if resp.Status/100 == 1 {
			continue
		}
		if whole != nil {
			_, _ = br.Discard(len(whole))
			h.awaitsEOF = false
		} else if !h.relayBody(&rt, bc.TCPConn, br, resp, body) {
			return rt
		}
		rt.reusable = !resp.Close && !early && br.Buffered() == 0
		switch err := h.finishBody(body); {
		case errors.Is(err, errBodyStalled):
			h.stalled(&rt, engine.StalledIdle) // as on the loops: no byte moved
		case errors.Is(err, http1.ErrBadRequest):
			h.badBody(&rt, body, err)
		case err != nil && !errors.Is(err, errBodyCut) && body.werr == nil:
			// The client left (FIN or RST) before its body was whole,
			// after an early response: as on the loops, and as before one.
			rt.reusable, rt.closing, rt.cutBack = false, true, true
			h.clientAborted(&rt, requestBodyErr(err))
		case err != nil && body.werr == nil: // errBodyCut: the client went silent
			rt.reusable, rt.cutBack = false, true
			h.rec.Outcome(engine.OutcomeTimeout, errBodySilent(h.ln.Close.PeerFinGrace))
		case err != nil:
			rt.reusable, rt.cutBack = false, true
		}
		if rt.reusable && body != nil && !h.awaitTaken(bc, rt.closing) {
			// The exchange is over and the backend's kernel has not
			// taken all of the request: it stopped reading it (it
			// answered without), and its connection is not reused.
			rt.reusable = false
		}
		rt.closing = rt.closing || !rt.reusable
		return rt
	}
}

// awaitTaken reports whether the backend's kernel took all of the request
// on bc, the exchange over: at once, or, where the client's connection
// goes on (not closing, not draining), within a wait for it (takeWait). A
// byte, a FIN or a reset from the backend meanwhile ends the wait: not
// taken. Each look reads the send queue first: a reset empties it, and
// the look that finds it empty also finds the reset.
func (h *h1) awaitTaken(bc *pool.Conn, closing bool) bool {
	var w takeWait
	switch q := engine.SendQueue(bc.TCPConn); {
	case q <= 0: // taken, or the queue unreadable: judged as taken, as ever
		return true
	case closing || h.draining():
		return false
	default:
		w.start(time.Now(), q, h.bk.cfg.Close.PeerFinGrace)
	}
	t := time.NewTimer(w.poll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.begun.Done():
			return false
		}
		q := engine.SendQueue(bc.TCPConn)
		if engine.Unread(bc.TCPConn) || engine.PeerEnded(bc.TCPConn) {
			return false
		}
		now := time.Now()
		taken, over, next := w.look(now, q)
		if taken || over {
			return taken
		}
		t.Reset(next.Sub(now))
	}
}

// spillLimit is how much of a chunked request body is held, whole and
// checked, before anything of the request goes to the backend.
const spillLimit = 64 << 10

// spillAfter is how long a chunked request body is held at most: a client
// that trickles it holds the backend connection it took, and the backend,
// seeing nothing, cannot apply its own timeouts to it; once the request
// went, it can. A variable for tests.
var spillAfter = time.Second

// spill holds the head and a chunked body until the body is complete (then
// a framing error is refused before the backend sees a byte), past
// spillLimit or held for spillAfter, whether more came or not (then what
// was held goes out and the rest streams). Its timer flushes from a
// goroutine of its own, hence the lock.
type spill struct {
	mu        sync.Mutex
	head, buf []byte
	dst       *pool.Conn
	// renew gives a connection for the request in place of dst, which
	// its backend closed while the spill held everything; nil: none.
	renew   func(old *pool.Conn) *pool.Conn
	timer   *time.Timer
	sent    bool
	done    bool  // the copy ended: the timer does nothing
	err     error // the timer's flush failed: the copy's next write says so
	written int64
	// early: bytes of the backend's waited unread as the body's last
	// write was due, the spill already sent: an answer to less than
	// the whole request (nothing is read while it is sent).
	early bool
}

// newSpill holds head for dst, flushing once spillAfter passed.
func newSpill(head []byte, dst *pool.Conn) *spill {
	s := &spill{head: head, dst: dst}
	s.timer = time.AfterFunc(spillAfter, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.done && !s.sent {
			s.err = s.flushLocked()
		}
	})
	return s
}

// WritingLast implements http1.LastWriter.
func (s *spill) WritingLast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.early = s.sent && engine.Unread(s.dst.TCPConn)
}

func (s *spill) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if !s.sent && len(s.buf)+len(p) <= spillLimit {
		s.buf = append(s.buf, p...)
		return len(p), nil
	}
	if err := s.flushLocked(); err != nil {
		return 0, err
	}
	n, err := s.dst.Write(p)
	s.written += int64(n)
	return n, err
}

// end sends what is still held once the body ended whole (err nil), and
// stops the timer: after it the spill is the caller's alone.
func (s *spill) end(err error) error {
	s.timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if err == nil {
		err = s.err
	}
	if err == nil {
		err = s.flushLocked()
	}
	return err
}

func (s *spill) flushLocked() error {
	if s.sent {
		return nil
	}
	s.sent = true
	// The connection can close while the request waits here (a pooled
	// one's idle timeout, a fresh one's wait for a request head): it goes
	// on another instead, as on the loops, rather than fail with 502 at
	// the backend's reset.
	if s.renew != nil && s.dst.Gone() {
		if c := s.renew(s.dst); c != nil {
			s.dst = c
		}
	}
	for _, b := range [][]byte{s.head, s.buf} {
		n, err := s.dst.Write(b)
		s.written += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

// renewBack takes a connection of the session's server for a request
// held whole so far (spill.renew), in place of old, which its backend
// closed meanwhile: the guard watches the new one and the record says
// retried; the caller discards old. Nil: none could be had (old stays,
// and the request fails on it as it would have).
func (h *h1) renewBack(old *pool.Conn) *pool.Conn {
	c, err := h.try(h.sv)
	if err != nil {
		return nil
	}
	if c.Bare != nil { // dialed for the loops
		if err := h.srv.unbare(c); err != nil {
			h.sv.pool.Discard(c)
			return nil
		}
	}
	h.rec.Note(policy.Back, policy.ReasonRetried)
	h.mu.Lock()
	if h.guard != nil {
		h.guard.Swap(old.TCPConn, c.TCPConn)
	}
	h.mu.Unlock()
	return c
}

// sendChunked sends a request with a chunked body (no 100-continue) through
// a spill, and refuses a malformed body with 400.
func (h *h1) sendChunked(rt *roundTrip, bc *pool.Conn, req *http1.Request, head []byte) bool {
	sp := newSpill(head, bc)
	sp.renew = h.renewBack
	n, err := req.CopyBody(sp, h.fr)
	err = sp.end(err)
	if sp.dst != bc {
		h.sv.pool.Discard(bc)
		rt.moved, bc, h.back = sp.dst, sp.dst, sp.dst
	}
	h.rec.Received(policy.Front, n+http1.Untaken(err))
	h.rec.Sent(policy.Back, sp.written)
	if sp.sent {
		h.rec.Request()
	}
	if err == nil {
		rt.early = sp.early
		return true
	}
	rt.closing = true
	rt.reusable, rt.unused, rt.cutBack = !sp.sent, !sp.sent, sp.sent
	switch {
	case errors.Is(err, http1.ErrBadRequest):
		h.rec.Outcome(engine.OutcomeBadRequest, err)
		h.writeError(400, "Bad Request")
	case engine.ResetByPeer(bc.TCPConn):
		rt.reusable, rt.unused, rt.cutBack = false, false, true
		h.rec.Outcome(engine.OutcomeBackendReset, fmt.Errorf("send request body: %w", err))
		h.writeError(502, "Bad Gateway")
	default: // the client stopped sending its body
		h.clientAborted(rt, requestBodyErr(err))
	}
	return false
}

// wholeBody is resp's body when br already holds all of it (a length
// known, and not a 1xx or a tunnel's start): it then goes to the client
// with the head, in one write. Nil otherwise.
func wholeBody(resp *http1.Response, br *bufio.Reader, tunnel bool) []byte {
	if tunnel || resp.Status/100 == 1 || resp.Framing != http1.Length || resp.Length <= 0 || resp.Length > int64(br.Buffered()) {
		return nil
	}
	b, _ := br.Peek(int(resp.Length))
	return b
}

// writeFront writes a response head to the client, and body after it in
// the same system call (writev) when there is one.
func (h *h1) writeFront(head, body []byte) (int, error) {
	if h.fw != nil {
		return h.fw.Writev(head, body)
	}
	bufs := net.Buffers{head, body}
	n, err := bufs.WriteTo(h.front)
	return int(n), err
}

// backIO is what the exchanges on a backend connection write and read it
// with: raw system calls, made once per connection (pool.Conn.Kept), not
// per request; sessions take the pool's connections in any order.
type backIO struct {
	w *engine.RawWriter // nil: written through the connection
	r io.Reader
}

// backOf is bc's backIO, made on its first exchange.
func backOf(bc *pool.Conn) *backIO {
	b, _ := bc.Kept.(*backIO)
	if b == nil {
		b = &backIO{r: rawReader(bc.TCPConn)}
		if w, err := engine.NewRawWriter(bc.TCPConn); err == nil {
			b.w = w
		}
		bc.Kept = b
	}
	return b
}

// writeBack writes a request head to the backend. whole: no body follows
// the head, so the write waits for the response to begin
// (RawWriter.Ask).
func writeBack(bc *pool.Conn, head []byte, whole bool) (int, error) {
	w := backOf(bc).w
	switch {
	case w == nil:
		return bc.Write(head)
	case whole:
		return w.Ask(head)
	}
	return w.Write(head)
}

// relayBody copies the response body to the client.
func (h *h1) relayBody(rt *roundTrip, back *net.TCPConn, br *bufio.Reader, resp *http1.Response, body *bodyCopy) bool {
	n, err := h.copyBody(back, br, resp)
	h.rec.Relayed(false, n)
	if err != nil {
		h.clientGone(rt, body, err)
		return false
	}
	rt.backFIN = resp.Framing == http1.UntilClose
	h.awaitsEOF = rt.backFIN
	return true
}

// copyBody relays the response body. A body of known length is relayed
// from the backend's socket itself once br's buffered bytes are out, so a
// large one splices (through bufio it would be copied through user space
// 32 KiB at a time); it never reads past the body.
func (h *h1) copyBody(back *net.TCPConn, br *bufio.Reader, resp *http1.Response) (int64, error) {
	if resp.Framing != http1.Length || resp.Length <= int64(br.Buffered()) {
		return resp.CopyBody(h.front, br)
	}
	head, _ := br.Peek(br.Buffered())
	n, err := h.front.Write(head)
	_, _ = br.Discard(n)
	written := int64(n)
	if err == nil {
		var m int64
		m, err = engine.CopyN(h.front, back, resp.Length-written)
		written += m
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return written, http1.CopyFailed(err)
	}
	return written, nil
}

// noResponse: the backend closed or failed before any response byte, or
// the client gave up its request body first. A connection from the pool
// may have been closed by the backend as it was taken: a request without
// a body and with an idempotent method is sent again, once, as net/http
// does.
func (h *h1) noResponse(rt *roundTrip, bc *pool.Conn, req *http1.Request, body *bodyCopy, err error) {
	rt.closing, rt.cutBack = true, true
	stalled, berr := h.stalledNow(body)
	switch {
	case stalled:
		return
	case errors.Is(berr, http1.ErrBadRequest):
		h.badBody(rt, body, berr)
		return
	case berr != nil && !errors.Is(berr, errBodyCut) && body.werr == nil:
		// The client left before its body was whole; a copy that failed
		// writing to the backend is the backend's close, answered 502.
		h.clientAborted(rt, requestBodyErr(berr))
		return
	}
	if bc.Pooled && req.Framing == http1.NoBody && idempotent(req.Method) {
		rt.retry, rt.err, rt.cutBack = true, err, false
		return
	}
	if body != nil && body.werr != nil {
		// The body's write met the backend's reset (or close) first and
		// took its error; the read for the response was then woken by a
		// deadline, whose "i/o timeout" would send an operator looking
		// for a slow backend.
		err = fmt.Errorf("backend closed before responding: send request body: %w", body.werr)
	}
	h.rec.Outcome(engine.OutcomeBackendReset, err)
	h.writeError(502, "Bad Gateway")
}

// stalledNow waits for the request body's copy and reports how it ended,
// and whether the guard interrupted the exchange: then the error at hand
// is the guard's doing, and stalled answers for it.
func (h *h1) stalledNow(body *bodyCopy) (stalled bool, bodyErr error) {
	bodyErr = h.finishBody(body)
	return h.guard.Stalled() != engine.NotStalled, bodyErr
}

// requestBodyErr is the error of a request body that failed on its way
// from the client, worded alike on both relays: the side, then the
// cause without the body copy's own words.
func requestBodyErr(err error) error {
	return fmt.Errorf("read request body: %w", http1.Cause(err))
}

// clientAborted: the client ended (FIN or RST) before its request was
// whole. The backend got part of it and is reset; the client, which left
// mid-request, is reset too.
func (h *h1) clientAborted(rt *roundTrip, err error) {
	h.rec.Outcome(engine.OutcomeClientAborted, err)
	rt.cutFront()
}

// badBody: the client's request body (sent on as it came: with
// Expect: 100-continue, or past the spill) turned out malformed. The
// backend, which got part of it, is reset; the client gets 400 where no
// response began, else its connection is reset after what it was sent.
func (h *h1) badBody(rt *roundTrip, body *bodyCopy, err error) {
	rt.reusable, rt.closing, rt.cutBack = false, true, true
	h.rec.Outcome(engine.OutcomeBadRequest, requestBodyErr(err))
	if body.answered.Load() { // a final response went (a 100 Continue is no answer)
		rt.cutFront()
		return
	}
	h.writeError(400, "Bad Request")
}

func (h *h1) badResponse(rt *roundTrip, body *bodyCopy, err error) {
	rt.closing, rt.cutBack = true, true
	stalled, berr := h.stalledNow(body)
	switch {
	case stalled:
		return
	case errors.Is(berr, http1.ErrBadRequest): // its failure woke the response's read
		h.badBody(rt, body, berr)
		return
	}
	h.rec.Outcome(engine.OutcomeBadResponse, err)
	if rt.started {
		rt.cutFront()
		return
	}
	h.writeError(502, "Bad Gateway")
}

// clientGone: relaying the response failed midway, on either side.
func (h *h1) clientGone(rt *roundTrip, body *bodyCopy, err error) {
	rt.closing, rt.cutBack = true, true
	if stalled, _ := h.stalledNow(body); stalled {
		return
	}
	// A response the backend ended early (or malformed) is its doing,
	// whatever the client did after: the loops say so too.
	if !backendCut(err) && engine.ResetByPeer(h.front) {
		h.rec.Outcome(engine.OutcomeClientReset, fmt.Errorf("relay response: %w", http1.Cause(err)))
		rt.endFront(engine.Ending{Cut: true, Why: policy.ReasonPeerReset})
		return
	}
	// A truncated response must not end like a whole one; what the
	// backend sent before reaches the client first.
	h.rec.Outcome(responseCutBy(err), fmt.Errorf("relay response: %w", err))
	rt.endFront(engine.Ending{Cut: true, Why: policy.ReasonCut, Deliver: true})
}

// backendCut says err is the backend's alone: its response ended before
// its end (EOF) or was malformed; only a read of it returns those.
func backendCut(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, http1.ErrBadResponse)
}

// responseCutBy is the outcome of a response cut by err: the backend's
// malformed body (bad_response), else its reset or early close.
func responseCutBy(err error) engine.Outcome {
	if errors.Is(err, http1.ErrBadResponse) {
		return engine.OutcomeBadResponse
	}
	return engine.OutcomeBackendReset
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

type bodyResult struct {
	n     int64 // bytes written to the backend
	taken int64 // bytes read from the client and not written (a refused chunk line)
	err   error
}

// startBody copies the request body to the backend while the response is
// read, so that 100-continue and early responses work. If the client
// stops midway (EOF or a reset), the copy interrupts the wait for the
// response: the request can no longer be answered.
func (h *h1) startBody(bc *pool.Conn, req *http1.Request) *bodyCopy {
	if req.Framing == http1.NoBody {
		return nil
	}
	b := &bodyCopy{done: make(chan bodyResult, 1), dst: bc, total: -1}
	if req.Framing == http1.Length {
		b.total = req.Length
		b.last.Store(b.total == 0) // nothing to write: the request is all sent
	}
	b.moved.Store(time.Now().UnixNano())
	go func() {
		n, err := req.CopyBody(b, h.fr)
		// Wake the wait for a response, which the backend, still waiting
		// for the rest of the body, may never send: the exchange ends by
		// the body's error (a malformed chunk: 400). A final response
		// already on its way is relayed whole first. A backend
		// connection that broke (a reset) needs no waking: its read
		// gives what came before the break, then the break's error, and
		// an answer that came early is delivered.
		broke := b.werr != nil && !errors.Is(b.werr, os.ErrDeadlineExceeded)
		if err != nil && !broke && (!errors.Is(err, http1.ErrBadRequest) || !b.answered.Load()) {
			_ = bc.SetReadDeadline(time.Now())
		}
		b.done <- bodyResult{n: n, taken: http1.Untaken(err), err: err}
	}()
	return b
}

// bodyCopy is a request body on its way to the backend: how the copy
// ended, and when its bytes last moved.
type bodyCopy struct {
	done    chan bodyResult
	dst     *pool.Conn
	moved   atomic.Int64 // time.Now().UnixNano() as the last write returned
	writing atomic.Bool  // a write to the backend is under way
	// answered: a final response's head came (the copy's own failure
	// then leaves its relay alone).
	answered atomic.Bool
	// last: the body's last write is due, noted before it: a
	// Content-Length body's bytes handed to writes reached total, a
	// chunked one's end was told (WritingLast).
	last   atomic.Bool
	handed int64 // the body's bytes handed to writes (the copy's goroutine alone)
	total  int64 // a Content-Length body's length; -1 for a chunked one
	werr   error // a write to the backend failed: read once done was received
	// notOwed: the final answer to Expect: 100-continue came with no
	// 100 before it: the client need not send the body (RFC 9110,
	// 10.1.1). The exchange's goroutine alone.
	notOwed bool
}

// WritingLast implements http1.LastWriter.
func (b *bodyCopy) WritingLast() { b.last.Store(true) }

// Write implements io.Writer for the copy, noting its progress.
func (b *bodyCopy) Write(p []byte) (int, error) {
	if b.handed += int64(len(p)); b.handed == b.total {
		b.last.Store(true)
	}
	b.writing.Store(true)
	n, err := b.dst.Write(p)
	b.moved.Store(time.Now().UnixNano())
	b.writing.Store(false)
	if err != nil {
		b.werr = err
	}
	return n, err
}

// finishBody waits for the request body copy. A client still sending when
// the response is complete may be silent for peer_fin_grace (counted from
// the body's last bytes: a client still sending is never cut) before the
// copy is cut and the connections are not reused. A write the backend is
// not taking is the proxy's backpressure, not the client's silence: it is
// bounded by idle_timeout.
func (h *h1) finishBody(b *bodyCopy) error {
	if b == nil {
		return nil
	}
	var res bodyResult
	if b.notOwed {
		res = h.bodyNotOwed(b)
	} else {
		res = h.awaitBody(b)
	}
	h.rec.Relayed(true, res.n)
	h.rec.Received(policy.Front, res.taken)
	return res.err
}

// awaitBody waits for the copy as finishBody says.
func (h *h1) awaitBody(b *bodyCopy) bodyResult {
	grace := h.ln.Close.PeerFinGrace
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		select {
		case res := <-b.done:
			return res
		case now := <-t.C:
			since := now.Sub(time.Unix(0, b.moved.Load()))
			switch writing := b.writing.Load(); {
			case writing && since < h.ln.IdleTimeout:
				t.Reset(min(grace, h.ln.IdleTimeout-since))
			case !writing && since < grace:
				t.Reset(grace - since)
			default:
				res := h.stopBody(b, now)
				res.err = errBodyCut
				if writing {
					res.err = errBodyStalled
				}
				return res
			}
		}
	}
}

// bodyNotOwed ends the copy of a body the final answer to Expect:
// 100-continue, with no 100 before it, made owed no more (RFC 9110,
// 10.1.1): at once, and ok unless some of it came after all (then the
// backend got part of it: cut).
func (h *h1) bodyNotOwed(b *bodyCopy) bodyResult {
	var res bodyResult
	select {
	case res = <-b.done:
	default:
		res = h.stopBody(b, time.Now())
	}
	stopped := errors.Is(res.err, os.ErrDeadlineExceeded) || errors.Is(res.err, io.EOF) || errors.Is(res.err, io.ErrUnexpectedEOF)
	switch {
	case stopped && res.n+res.taken == 0:
		res.err = nil // none of it came: none was owed (a client that closed once answered, too)
	case stopped:
		res.err = errBodyCut
	}
	return res
}

// stopBody interrupts the copy (its read of the client, a write the
// backend is not taking) and returns what it did.
func (h *h1) stopBody(b *bodyCopy, now time.Time) bodyResult {
	_ = h.front.SetReadDeadline(now)
	_ = b.dst.SetWriteDeadline(now)
	res := <-b.done
	_ = h.front.SetReadDeadline(time.Time{})
	_ = b.dst.SetWriteDeadline(time.Time{})
	return res
}

// afterResponse returns bc to the pool, or ends the back leg through the
// engine: by its policy after a whole exchange, with a reset when a
// request or response was cut.
func (h *h1) afterResponse(bc *pool.Conn, br *bufio.Reader, rt roundTrip) {
	switch {
	case rt.reusable && !rt.cutBack: // Put clears its deadlines
		if !rt.unused {
			h.rec.Pooled()
		}
		h.back = nil
		h.sv.pool.Put(bc)
	case rt.cutBack:
		h.eng.End(policy.Back, bc.TCPConn, nil, engine.Ending{Cut: true, Why: policy.ReasonCut})
		h.back = nil
		h.sv.pool.Release(bc)
	case rt.closing && !rt.backFIN:
		h.back = nil
		h.endBackBeside(bc, br)
		return // br is the goroutine's
	default:
		h.eng.End(policy.Back, bc.TCPConn, br, engine.Ending{PeerFIN: rt.backFIN})
		h.back = nil
		h.sv.pool.Release(bc)
	}
	putBackReader(br)
}

// endBackBeside ends the back leg of an exchange that closes the
// connection on a goroutine of its own, while this one ends the front
// (h.end, which waits for it), as the loops end both at once: a backend
// that has not closed yet (one lingering after an early answer, as nginx
// does) keeps the back leg waiting up to peer_fin_grace, and the
// proxy's FIN to the client waited behind it, while the client, told
// Connection: close, closed first and held the TIME-WAIT the front's
// policy wants on the proxy. The back leg's record is taken back at the
// join; a panic on that goroutine is recovered into internal_error, its
// connection reset.
func (h *h1) endBackBeside(bc *pool.Conn, br *bufio.Reader) {
	b, pl := h.eng.Beside(), h.sv.pool
	ended := make(chan *engine.Session, 1)
	h.backEnded = ended
	go func() {
		defer func() { ended <- b }()
		defer putBackReader(br)
		defer func() {
			if p := recover(); p != nil {
				b.Rec.Outcome(engine.OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
				pl.Discard(bc)
				return
			}
			pl.Release(bc)
		}()
		b.End(policy.Back, bc.TCPConn, br, engine.Ending{})
	}()
}

// joinBack waits for a back leg ending beside the front (endBackBeside)
// and takes its record back; nothing when none does.
func (h *h1) joinBack() {
	if h.backEnded != nil {
		h.eng.Join(<-h.backEnded, policy.Back)
		h.backEnded = nil
	}
}

// dropBackend resets a connection that failed before responding.
func (h *h1) dropBackend(bc *pool.Conn, br *bufio.Reader) {
	putBackReader(br)
	h.back = nil
	h.sv.pool.Discard(bc)
}

// tunnel relays both ways after an Upgrade or CONNECT; bytes already read
// past the messages go first.
func (h *h1) tunnel(bc *pool.Conn, br *bufio.Reader) {
	defer func() { h.back = nil; h.sv.pool.Release(bc) }()
	_ = bc.SetDeadline(time.Time{})
	p := engine.Pending{Up: buffered(h.fr), Down: buffered(br)}
	h.eng.Tunnel = true // http1 takes no bet (rule 3), a tunnel's back leg neither
	h.eng.Relay(h.front, bc.TCPConn, p)
	putBackReader(br)
}

// buffered returns a copy of what br holds, and empties it.
func buffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	b = append([]byte(nil), b...)
	_, _ = br.Discard(n)
	return b
}

func putBackReader(br *bufio.Reader) {
	br.Reset(nil)
	backReaders.Put(br)
}
