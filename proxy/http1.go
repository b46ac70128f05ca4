package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/closeproxy/closeproxy/http1"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// h1 is an http1-mode session: it reads one request at a time from the
// client, sends it on a pooled backend connection and relays the response,
// bytes unchanged but for the Connection header; after a complete response
// the backend connection goes back to the pool. An Upgrade or CONNECT turns
// the session into an opaque two-way relay.
type h1 struct {
	*session
	fr      *bufio.Reader // the client's side, as intake left it
	front   *leg
	ctx     context.Context // ends when shutdown_timeout ran out
	lim     http1.Limits
	mustFIN bool // the last response was delimited by a close: only a FIN ends it
}

var backReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func (ss *session) serveHTTP1(ctx context.Context, fr *bufio.Reader, drain, kill <-chan struct{}) {
	h := &h1{session: ss, fr: fr, ctx: ctx,
		front: ss.newLeg(policy.Front, ss.front)}
	h.td.Back.Close = policy.CloseNone // until a backend connection is used
	defer h.front.finishRecord()
	stop := context.AfterFunc(ctx, func() { _ = ss.front.SetReadDeadline(time.Now()) })
	defer stop()
	for h.front.phase != phaseClosed {
		req, err := h.readRequest()
		if err != nil {
			h.endFront(err)
			return
		}
		closing, tunnel := h.exchange(req, drain, kill)
		if tunnel {
			return
		}
		if closing || ctx.Err() != nil {
			h.setOutcomeIfOK(ctx)
			h.finishFront(policy.ProxyFirst)
			return
		}
	}
}

// readRequest waits up to idle_timeout for the next request head.
func (h *h1) readRequest() (*http1.Request, error) {
	if err := h.front.conn.SetReadDeadline(time.Now().Add(h.ln.IdleTimeout)); err != nil {
		return nil, err
	}
	req, err := http1.ReadRequest(h.fr, h.lim)
	if err == nil {
		h.td.Front.BytesIn += int64(len(req.Raw))
		_ = h.front.conn.SetReadDeadline(time.Time{})
	}
	return req, err
}

// endFront ends the session after reading a request failed: the client
// closed between requests, went idle, sent a bad request, or reset.
func (h *h1) endFront(err error) {
	switch {
	case errors.Is(err, io.EOF):
		h.front.peerFIN()
		h.finishFront(policy.PeerFirst)
	case errors.Is(err, os.ErrDeadlineExceeded):
		h.setOutcomeIfOK(h.ctx)
		if h.td.Outcome == OutcomeOK {
			h.td.Outcome, h.td.Err = OutcomeTimeout, errors.New("idle_timeout: no request")
		}
		h.finishFront(policy.ProxyFirst)
	case errors.Is(err, http1.ErrBadRequest):
		h.td.Outcome, h.td.Err = OutcomeBadRequest, err
		h.writeError(400, "Bad Request")
		h.finishFront(policy.ProxyFirst)
	case resetByPeer(h.front.conn) || errors.Is(err, syscall.ECONNRESET):
		h.td.Outcome = OutcomeClientReset
		h.front.rec.Close = policy.ClosePeerReset
		h.front.close()
	default:
		h.td.Outcome, h.td.Err = OutcomeError, fmt.Errorf("read request: %w", err)
		h.front.fail()
	}
}

func (h *h1) setOutcomeIfOK(ctx context.Context) {
	if h.td.Outcome == OutcomeOK && ctx.Err() != nil {
		h.td.Outcome = OutcomeDrained
	}
}

// finishFront ends the front leg by its policy; a close-delimited response
// can only be ended by a FIN, whatever the target.
func (h *h1) finishFront(kind policy.Kind) {
	if h.mustFIN && h.front.phase != phaseClosed {
		h.front.rec.Fallback = "close_delimited"
		h.front.finFirstBlocking(h.fr)
		return
	}
	h.front.finish(h.fr, kind)
}

// writeError answers the client with a short error response that closes
// the connection.
func (h *h1) writeError(status int, text string) {
	body := fmt.Sprintf("%d %s\n", status, text)
	msg := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, text, len(body), body)
	n, _ := io.WriteString(h.front.conn, msg)
	h.td.Front.BytesOut += int64(n)
}

// getBackend takes a backend connection from a server's pool and notes it
// in the record.
func (h *h1) getBackend() (*pool.Conn, error) {
	t0 := time.Now()
	bc, err := h.acquire()
	if h.td.BackConnect < 0 {
		h.td.BackConnect = time.Since(t0)
	}
	if err != nil {
		return nil, err
	}
	h.noteBackend(bc)
	return bc, nil
}

func (h *h1) noteBackend(bc *pool.Conn) {
	td := h.td
	td.BackPooled = td.BackPooled || bc.Pooled
	td.BackReused = td.BackReused || bc.Reused
	td.Back.Local, td.Back.Peer = addrPort(bc.LocalAddr()), addrPort(bc.RemoteAddr())
}

// backendFailed answers the client for a backend it could not use and
// records why.
func (h *h1) backendFailed(err error) {
	h.td.Err = err
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		h.td.Outcome = OutcomePortsExhausted
		h.writeError(503, "Service Unavailable")
	case errors.Is(err, pool.ErrPoolExhausted):
		h.td.Outcome = OutcomePoolExhausted
		h.writeError(503, "Service Unavailable")
	default:
		h.td.Outcome = OutcomeDialFailed
		h.writeError(502, "Bad Gateway")
	}
}
