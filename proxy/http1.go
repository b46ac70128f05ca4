package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/http1"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// h1 is an http1-mode session: it reads one request at a time from the
// client, sends it on a pooled backend connection and relays the response,
// bytes unchanged but for the Connection header; after a complete response
// the backend connection goes back to the pool. An Upgrade or CONNECT turns
// the session into an opaque two-way relay. Each leg it ends alone is ended
// by the engine (engine.Session.End), as its close policy says.
type h1 struct {
	*session
	fr  *bufio.Reader   // the client's side, as intake left it
	ctx context.Context // ends when shutdown_timeout ran out
	// begun ends when draining began: an idle connection is closed, the
	// response in flight says Connection: close.
	begun context.Context
	lim   http1.Limits
	// awaitsEOF: the last response was delimited by the close, so the
	// client reads to EOF: only the proxy's FIN ends it.
	awaitsEOF bool
	// drainClosed: only draining made the last response say Connection: close.
	drainClosed bool
	guard       *engine.Guard     // the exchange in progress's
	ended       bool              // the front leg was ended
	fw          *engine.RawWriter // writes heads and small bodies to the client

	// mu orders phase and guard against the session's two watchers
	// (interrupt), which run on goroutines of their own.
	mu    sync.Mutex
	phase h1Phase
}

// h1Phase is what an http1 session is doing, for its watchers: what
// draining or shutdown running out of time must interrupt.
type h1Phase int

const (
	between  h1Phase = iota // nothing to interrupt: the session acts on its own
	awaiting                // waiting for a request's first byte: draining and shutdown out of time end the wait
	head                    // reading a request's head: shutdown out of time ends it
	guarded                 // an exchange under h.guard: shutdown out of time drains it
)

// watch registers an http1 session's watchers; tests make them late (a
// watcher runs on a goroutine of its own, as late as the scheduler puts it).
var watch = context.AfterFunc

var backReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func (ss *session) serveHTTP1(fr *bufio.Reader, ctx, begun context.Context) {
	h := &h1{session: ss, fr: fr, ctx: ctx, begun: begun}
	h.fw, _ = engine.NewRawWriter(ss.front) // nil: writeFront writes through the connection
	// Two watchers a session, not three an exchange: context.AfterFunc
	// registrations cost several per cent of a keep-alive request.
	stopBegun := watch(begun, func() { h.interrupt(false) })
	defer stopBegun()
	stopOut := watch(ctx, func() { h.interrupt(true) })
	defer stopOut()
	for {
		req, err := h.readRequest()
		if err != nil {
			h.endFront(err)
			return
		}
		closing, tunnel := h.exchange(req)
		switch {
		case tunnel || h.ended:
			return
		case closing:
			if h.awaitsEOF {
				h.rec.Note(policy.Front, policy.ReasonCloseDelimited)
			}
			if h.drainClosed {
				h.rec.Note(policy.Front, policy.ReasonDraining)
			}
			h.end(engine.Ending{AwaitsEOF: h.awaitsEOF})
			return
		}
	}
}

// errIdle: no request began within idle_timeout (or before draining
// began): the connection was idle between requests.
var errIdle = errors.New("no request")

// draining reports that draining began: the front leg ends after the
// exchange in progress.
func (h *h1) draining() bool { return h.begun.Err() != nil }

// readRequest waits up to idle_timeout for the first byte of the next
// request, then up to idle_timeout more for its whole head. Draining ends
// the first wait (an idle keep-alive connection closes at once); shutdown
// running out of time ends both.
func (h *h1) readRequest() (req *http1.Request, err error) {
	defer func() {
		if err != nil {
			h.leave() // the session ends the front leg: no watcher may touch it
		}
	}()
	if err := h.enter(awaiting); err != nil {
		return nil, err
	}
	if err := h.awaitRequest(); err != nil {
		return nil, err
	}
	_ = h.enter(head)
	if req, err = http1.ReadRequest(h.fr, h.lim); err == nil {
		h.rec.Received(policy.Front, int64(len(req.Raw)))
		_ = h.enter(between)
	}
	return req, err
}

// enter makes p the session's phase and sets the client's read deadline
// for it: idle_timeout from now while a request is read, none between;
// now when what p waits for is already interrupted. Under mu, so that a
// watcher firing meanwhile either sees p or is seen here.
func (h *h1) enter(p h1Phase) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.phase = p
	var d time.Time
	switch {
	case p == between:
	case h.ctx.Err() != nil, p == awaiting && h.draining():
		d = time.Now()
	default:
		d = time.Now().Add(h.ln.IdleTimeout)
	}
	return h.front.SetReadDeadline(d)
}

// leave makes the phase between and leaves the read deadline as it is.
func (h *h1) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.phase = between
}

// interrupt is the session's watchers' work, when draining began (out:
// false) or shutdown ran out of time (out: true): end a wait for a
// request, the reading of a head (only when out of time) or the exchange
// in progress (likewise, through its guard).
func (h *h1) interrupt(out bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.phase == awaiting, h.phase == head && out:
		_ = h.front.SetReadDeadline(time.Now())
	case h.phase == guarded && out:
		h.guard.Drain()
	}
}

// startGuard starts the guard of an exchange on bc; one already out of
// time is drained at once.
func (h *h1) startGuard(bc *net.TCPConn) {
	g := engine.NewGuard(h.ln.IdleTimeout, h.front, bc)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.guard, h.phase = g, guarded
	if h.ctx.Err() != nil {
		g.Drain()
	}
}

// stopGuard ends the exchange's guard and says whether, and why, it
// interrupted the exchange.
func (h *h1) stopGuard() engine.Stall {
	h.leave()
	return h.guard.Stop()
}

// awaitRequest waits for the first byte of a request, or a request
// already buffered. Draining interrupts the wait (enter, interrupt): a
// connection with no request begun is idle and is closed.
func (h *h1) awaitRequest() error {
	if h.draining() && h.fr.Buffered() == 0 {
		return errIdle
	}
	_, err := h.fr.Peek(1)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errIdle
	}
	return err
}

// endFront ends the session after reading a request failed: the client
// closed or went idle between requests, stopped midway through a head,
// sent a bad request, or reset.
func (h *h1) endFront(err error) {
	switch {
	case errors.Is(err, io.EOF):
		h.end(engine.Ending{PeerFIN: true})
	case errors.Is(err, errIdle):
		// Nothing of a request arrived: the connection was idle, nothing
		// is cut; it ends by its policy.
		why := policy.ReasonIdle
		if h.ctx.Err() != nil || h.draining() {
			why = policy.ReasonDraining
		}
		h.rec.Note(policy.Front, why)
		h.end(engine.Ending{})
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, io.ErrUnexpectedEOF):
		// A head begun and not finished: the request was cut.
		h.rec.Outcome(h.timeoutOutcome(), fmt.Errorf("read request head: %w", err))
		h.end(engine.Ending{Cut: true, Why: policy.ReasonCut})
	case errors.Is(err, http1.ErrBadRequest):
		h.rec.Outcome(engine.OutcomeBadRequest, err)
		h.writeError(400, "Bad Request")
		h.end(engine.Ending{})
	case engine.ResetByPeer(h.front) || errors.Is(err, syscall.ECONNRESET):
		h.rec.Outcome(engine.OutcomeClientReset, fmt.Errorf("read request: %w", err))
		h.end(engine.Ending{Cut: true, Why: policy.ReasonPeerReset})
	default:
		h.rec.Outcome(engine.OutcomeError, fmt.Errorf("read request: %w", err))
		h.end(engine.Ending{Cut: true, Why: policy.ReasonCut})
	}
}

// timeoutOutcome is what a stall ends as: drained once shutdown ran out of
// time, timeout otherwise.
func (h *h1) timeoutOutcome() engine.Outcome {
	if h.ctx.Err() != nil {
		return engine.OutcomeDrained
	}
	return engine.OutcomeTimeout
}

// end ends the front leg through the engine, once.
func (h *h1) end(e engine.Ending) {
	if h.ended {
		return
	}
	h.ended = true
	h.eng.End(policy.Front, h.front, h.fr, e)
}

// writeError answers the client with a short error response that closes
// the connection.
func (h *h1) writeError(status int, text string) {
	body := fmt.Sprintf("%d %s\n", status, text)
	msg := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, text, len(body), body)
	n, _ := io.WriteString(h.front, msg)
	h.rec.Sent(policy.Front, int64(n))
}

// backendFailed answers the client for a backend it could not use and
// records why.
func (h *h1) backendFailed(err error) {
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		h.rec.Outcome(engine.OutcomePortsExhausted, err)
		h.writeError(503, "Service Unavailable")
	case errors.Is(err, pool.ErrPoolExhausted):
		h.rec.Outcome(engine.OutcomePoolExhausted, err)
		h.writeError(503, "Service Unavailable")
	default:
		h.rec.Outcome(engine.OutcomeDialFailed, err)
		h.writeError(502, "Bad Gateway")
	}
}
