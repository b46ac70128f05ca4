package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

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
	abort    bool  // the backend got part of a refused request: reset it
	unused   bool  // nothing was sent on the connection
	err      error // why a retry is wanted
}

// errBodyCut marks a request body the client had not finished sending when
// the response was complete.
var errBodyCut = errors.New("request body incomplete when the response ended")

// exchange carries one request and its response. It reports whether the
// front leg must end after it, and whether the session became a tunnel
// (then it is over).
func (h *h1) exchange(req *http1.Request, drain, kill <-chan struct{}) (closing, tunnel bool) {
	for attempt := 0; ; attempt++ {
		bc, err := h.getBackend()
		if err != nil {
			h.backendFailed(err)
			return true, false
		}
		br := backReaders.Get().(*bufio.Reader)
		br.Reset(bc)
		rt := h.roundTrip(bc, br, req)
		switch {
		case rt.retry && attempt == 0:
			h.td.Back.Fallback = "retried"
			h.dropBackend(bc, br)
			continue
		case rt.retry: // the second connection failed the same way: once is all
			h.td.Outcome, h.td.Err = OutcomeBackendReset, rt.err
			h.writeError(502, "Bad Gateway")
		case rt.tunnel:
			h.tunnel(bc, br, drain, kill)
			return true, true
		}
		h.afterResponse(bc, br, rt)
		return rt.closing, false
	}
}

// roundTrip sends req on bc and relays the responses to the client.
func (h *h1) roundTrip(bc *pool.Conn, br *bufio.Reader, req *http1.Request) (rt roundTrip) {
	head := req.HeadForBackend()
	var body chan bodyResult
	if req.Framing == http1.Chunked && !req.ExpectContinue {
		if !h.sendChunked(&rt, bc, req, head) {
			return rt
		}
	} else {
		n, err := bc.Write(head)
		h.td.Back.BytesOut += int64(n)
		h.td.BackRequests++
		if err != nil {
			h.noResponse(&rt, bc, req, nil, fmt.Errorf("send request to backend: %w", err))
			return rt
		}
		body = h.startBody(bc, req)
	}
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
		h.td.Back.BytesIn += int64(len(resp.Raw))
		rt.closing = req.Close || resp.Close
		n, err := h.front.conn.Write(resp.HeadForClient(rt.closing))
		h.td.Front.BytesOut += int64(n)
		rt.started = true
		if err != nil {
			h.clientGone(&rt, body, err)
			return rt
		}
		if resp.Status == http.StatusSwitchingProtocols || req.Method == http.MethodConnect && resp.Status/100 == 2 {
			rt.tunnel = true
			return rt
		}
		if resp.Status/100 == 1 {
			continue
		}
		if !h.relayBody(&rt, bc.TCPConn, br, resp, body) {
			return rt
		}
		rt.reusable = !resp.Close && br.Buffered() == 0
		if err := h.finishBody(body); err != nil {
			rt.reusable = false
		}
		rt.closing = rt.closing || !rt.reusable
		return rt
	}
}

// spillLimit is how much of a chunked request body is held, whole and
// checked, before anything of the request goes to the backend.
const spillLimit = 64 << 10

// spill holds the head and a chunked body until the body is complete (then
// a framing error is refused before the backend sees a byte) or past
// spillLimit (then what was held goes out and the rest streams).
type spill struct {
	head, buf []byte
	dst       io.Writer
	sent      bool
	written   int64
}

func (s *spill) Write(p []byte) (int, error) {
	if !s.sent && len(s.buf)+len(p) <= spillLimit {
		s.buf = append(s.buf, p...)
		return len(p), nil
	}
	if err := s.flush(); err != nil {
		return 0, err
	}
	n, err := s.dst.Write(p)
	s.written += int64(n)
	return n, err
}

func (s *spill) flush() error {
	if s.sent {
		return nil
	}
	s.sent = true
	for _, b := range [][]byte{s.head, s.buf} {
		n, err := s.dst.Write(b)
		s.written += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

// sendChunked sends a request with a chunked body (no 100-continue) through
// a spill, and refuses a malformed body with 400.
func (h *h1) sendChunked(rt *roundTrip, bc *pool.Conn, req *http1.Request, head []byte) bool {
	sp := &spill{head: head, dst: bc}
	n, err := req.CopyBody(sp, h.fr)
	if err == nil {
		err = sp.flush()
	}
	h.td.Front.BytesIn += n
	h.td.Back.BytesOut += sp.written
	if sp.sent {
		h.td.BackRequests++
	}
	if err == nil {
		return true
	}
	rt.closing = true
	switch {
	case errors.Is(err, http1.ErrBadRequest):
		h.td.Outcome, h.td.Err = OutcomeBadRequest, err
		h.writeError(400, "Bad Request")
		rt.reusable = !sp.sent // the backend saw nothing: the connection is clean
		rt.unused = !sp.sent
		rt.abort = sp.sent
	case resetByPeer(bc.TCPConn):
		h.td.Outcome, h.td.Err = OutcomeBackendReset, fmt.Errorf("send request body: %w", err)
		h.writeError(502, "Bad Gateway")
		rt.abort = true
	default: // the client stopped sending its body
		h.td.Outcome, h.td.Err = OutcomeClientReset, fmt.Errorf("read request body: %w", err)
		rt.reusable = !sp.sent
		rt.unused = !sp.sent
		rt.abort = sp.sent
	}
	return false
}

// relayBody copies the response body to the client.
func (h *h1) relayBody(rt *roundTrip, back *net.TCPConn, br *bufio.Reader, resp *http1.Response, body chan bodyResult) bool {
	n, err := h.copyBody(back, br, resp)
	h.td.Back.BytesIn += n
	h.td.Front.BytesOut += n
	if err != nil {
		h.clientGone(rt, body, err)
		return false
	}
	rt.backFIN = resp.Framing == http1.UntilClose
	h.mustFIN = rt.backFIN
	return true
}

// copyBody relays the response body. A body of known length is relayed
// from the backend's socket itself once br's buffered bytes are out, so a
// large one splices (through bufio it would be copied through user space
// 32 KiB at a time); it never reads past the body.
func (h *h1) copyBody(back *net.TCPConn, br *bufio.Reader, resp *http1.Response) (int64, error) {
	if resp.Framing != http1.Length || resp.Length <= int64(br.Buffered()) {
		return resp.CopyBody(h.front.conn, br)
	}
	head, _ := br.Peek(br.Buffered())
	n, err := h.front.conn.Write(head)
	_, _ = br.Discard(n)
	written := int64(n)
	if err == nil {
		var m int64
		m, err = relayCopyN(h.front.conn, back, resp.Length-written)
		written += m
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return written, fmt.Errorf("copy body: %w", err)
	}
	return written, nil
}

// noResponse: the backend closed or failed before any response byte. A
// connection from the pool may have been closed by the backend as it was
// taken: a request without a body and with an idempotent method is sent
// again, once, as net/http does.
func (h *h1) noResponse(rt *roundTrip, bc *pool.Conn, req *http1.Request, body chan bodyResult, err error) {
	h.finishBody(body)
	rt.closing = true
	if bc.Pooled && req.Framing == http1.NoBody && idempotent(req.Method) {
		rt.retry, rt.err = true, err
		return
	}
	h.td.Outcome, h.td.Err = OutcomeBackendReset, err
	h.writeError(502, "Bad Gateway")
}

func (h *h1) badResponse(rt *roundTrip, body chan bodyResult, err error) {
	h.finishBody(body)
	rt.closing = true
	h.td.Outcome, h.td.Err = OutcomeBadResponse, err
	if !rt.started {
		h.writeError(502, "Bad Gateway")
	}
}

// clientGone: relaying the response failed midway, on either side.
func (h *h1) clientGone(rt *roundTrip, body chan bodyResult, err error) {
	h.finishBody(body)
	rt.closing = true
	switch {
	case resetByPeer(h.front.conn):
		h.td.Outcome = OutcomeClientReset
		h.front.rec.Close = policy.ClosePeerReset
		h.front.close()
	default:
		h.td.Outcome, h.td.Err = OutcomeBackendReset, fmt.Errorf("relay response: %w", err)
		h.front.reset("backend_failed") // a truncated response must not end like a whole one
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

type bodyResult struct {
	n   int64
	err error
}

// startBody copies the request body to the backend while the response is
// read, so that 100-continue and early responses work.
func (h *h1) startBody(bc *pool.Conn, req *http1.Request) chan bodyResult {
	if req.Framing == http1.NoBody {
		return nil
	}
	ch := make(chan bodyResult, 1)
	go func() {
		n, err := req.CopyBody(bc, h.fr)
		ch <- bodyResult{n, err}
	}()
	return ch
}

// finishBody waits for the request body copy. A client still sending when
// the response is complete gets peer_fin_grace to finish; then the copy is
// cut and the connections are not reused.
func (h *h1) finishBody(ch chan bodyResult) error {
	if ch == nil {
		return nil
	}
	var res bodyResult
	select {
	case res = <-ch:
	case <-time.After(h.ln.Close.PeerFinGrace):
		_ = h.front.conn.SetReadDeadline(time.Now())
		res = <-ch
		res.err = errBodyCut
	}
	h.td.Front.BytesIn += res.n
	h.td.Back.BytesOut += res.n
	return res.err
}

// afterResponse returns bc to the pool, or ends the back leg by its policy.
func (h *h1) afterResponse(bc *pool.Conn, br *bufio.Reader, rt roundTrip) {
	if rt.abort {
		h.td.Back.RSTOut = time.Since(h.start)
		h.td.Back.Close = policy.CloseReset
		h.dropBackend(bc, br)
		return
	}
	defer putBackReader(br)
	if rt.reusable {
		if !rt.unused {
			h.td.Back.Close = policy.ClosePooled
		}
		h.sv.pool.Put(bc)
		return
	}
	back := h.newLeg(policy.Back, bc.TCPConn)
	kind := policy.ProxyFirst
	if rt.backFIN {
		back.peerFIN()
		kind = policy.PeerFirst
	}
	back.finish(br, kind)
	back.finishRecord()
	h.sv.pool.Release(bc)
}

// dropBackend resets a connection that failed before responding.
func (h *h1) dropBackend(bc *pool.Conn, br *bufio.Reader) {
	putBackReader(br)
	h.sv.pool.Discard(bc)
}

// tunnel relays both ways after an Upgrade or CONNECT; bytes already read
// past the messages go first.
func (h *h1) tunnel(bc *pool.Conn, br *bufio.Reader, drain, kill <-chan struct{}) {
	defer h.sv.pool.Release(bc)
	if err := flushBuffered(bc, h.fr); err == nil {
		_ = flushBuffered(h.front.conn, br)
	}
	putBackReader(br)
	back := h.newLeg(policy.Back, bc.TCPConn)
	r := newRelay(h.front, back, h.ln.IdleTimeout, drain, kill)
	r.run()
	if h.td.Outcome == OutcomeOK {
		h.td.Outcome, h.td.Err = r.outcome, r.err
	}
}

func flushBuffered(w io.Writer, br *bufio.Reader) error {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := w.Write(b); err != nil {
			return err
		}
		_, _ = br.Discard(n)
	}
	return nil
}

func putBackReader(br *bufio.Reader) {
	br.Reset(nil)
	backReaders.Put(br)
}
