package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/http1"
	"github.com/closeproxy/closeproxy/internal/park"
	"github.com/closeproxy/closeproxy/policy"
)

// h1 is an http1-mode session on a goroutine: it reads one request at a
// time from the client, sends it on a pooled backend connection and relays
// the response, bytes unchanged but for the Connection header; after a
// complete response the backend connection goes back to the pool. An
// Upgrade or CONNECT turns the session into an opaque two-way relay. Each
// leg it ends alone is ended by the engine (engine.Session.End), as its
// close policy says. Sessions the relay loops run are h1Loop's, which
// hands what it does not take to h1 (runHTTP1From).
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
	// first is a request read already (on a relay loop) whose exchange
	// comes first; retried: it failed once on another connection.
	first      *http1.Request
	retried    bool
	guard      *engine.Guard     // the exchange in progress's
	spareGuard *engine.Guard     // the last exchange's, stopped: the next one's
	ended      bool              // the front leg was ended
	fw         *engine.RawWriter // writes heads and small bodies to the client
	// until ends the wait for the next request: idle_timeout after the
	// last exchange (or the session's start).
	until time.Time
	// owedBy: peer_fin_grace after the last exchange, the wait draining
	// grants a request its answer let the client send (owed).
	owedBy time.Time
	// wait is the client's socket parked between requests, since
	// parkedAt, after a wait of parkAfter (parkFirst, doubled each time the
	// client came back soon after a park, up to parkMost).
	wait      *park.Wait
	parkedAt  time.Time
	parkAfter time.Duration
	noPark    bool // parking failed once: the session waits on its goroutine
	// backEnded gives the session that ended the back leg on a goroutine
	// of its own, beside the front's end (endBackBeside), once it did;
	// nil when none does.
	backEnded chan *engine.Session

	// mu orders phase, guard and wait against the server's two watchers
	// (h1Sessions.interrupt), which run on goroutines of their own.
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
	parked                  // the client's socket parked (h.wait): draining and shutdown out of time wake it
)

// parkFirst is how long an http1 session first waits for a client's next
// request on its goroutine before it parks the client's socket with the
// server's parker and its goroutine ends: an idle keep-alive connection
// then holds no goroutine stack and no read buffer (about 8 KiB less).
// The shorter the wait, the fewer sessions hold a goroutine at once while
// many connections open and fall idle together. A park and its wake-up
// cost about 15 us of CPU (two epoll_ctl, a timer, a goroutine started
// and its stack grown), a fifth of a request's: a session whose client
// came back within five times its wait doubles the wait, up to parkMost,
// so that a client sending every 30 ms parks once and then no more, and
// parks cost at most about 15 us per six waits of one that parks on.
const (
	parkFirst = 20 * time.Millisecond
	parkMost  = time.Second
)

// RecordsWriting is how many ended sessions are writing their record now:
// more than a moment's, the records sink takes nothing.
func (s *Server) RecordsWriting() int64 { return s.writing.Load() }

// ParkedHTTP1 is how many http1 sessions are parked now.
func (s *Server) ParkedHTTP1() int {
	if p := s.parker.Load(); p != nil {
		return p.Parked()
	}
	return 0
}

// parkedHook, when set (tests), is called each time a session parked.
var parkedHook func()

// nextParkAfter is a session's wait before its next park, after a park
// of parkedFor that followed a wait of after: doubled, up to parkMost,
// when the client came back within five such waits.
func nextParkAfter(after, parkedFor time.Duration) time.Duration {
	if parkedFor < 5*after {
		return min(2*after, parkMost)
	}
	return after
}

// errParked: the session parked; its goroutine ends here and a new one
// goes on (resume).
var errParked = errors.New("parked")

// frontReaders are the client-side readers of http1 sessions, taken at
// the start and after a park, given back when the session parks or ends:
// a parked session holds none.
var frontReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// frontReader is a reader from frontReaders, reading c with raw system
// calls (engine.RawReader).
func frontReader(c *net.TCPConn) *bufio.Reader {
	fr := frontReaders.Get().(*bufio.Reader)
	fr.Reset(rawReader(c))
	return fr
}

// rawReader reads c with raw system calls, or through c where it cannot.
func rawReader(c *net.TCPConn) io.Reader {
	if r, err := engine.NewRawReader(c); err == nil {
		return r
	}
	return c
}

// putFrontReader gives fr back to frontReaders; fr holds nothing unread.
// One sized for a loop's hand-off is left to the collector.
func putFrontReader(fr *bufio.Reader) {
	if fr.Size() != frontReaderSize {
		return
	}
	fr.Reset(nil)
	frontReaders.Put(fr)
}

// frontReaderSize is the size of frontReaders' readers, bufio's default.
var frontReaderSize = bufio.NewReader(nil).Size()

// watch registers the server's watchers of its http1 sessions; tests make
// them late (a watcher runs on a goroutine of its own, as late as the
// scheduler puts it).
var watch = context.AfterFunc

// h1Sessions are a server's http1 sessions, parked ones included, for its
// two watchers — draining began, shutdown ran out of time — to interrupt
// (h1.interrupt). Two watchers for the server, not two a session: each
// context.AfterFunc registration held about 180 bytes for the session's
// life, a tenth of what a parked session holds.
type h1Sessions struct {
	mu  sync.Mutex
	set map[*h1]struct{}
}

func (w *h1Sessions) add(h *h1) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.set == nil {
		w.set = map[*h1]struct{}{}
	}
	w.set[h] = struct{}{}
}

func (w *h1Sessions) remove(h *h1) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.set, h)
}

// interrupt interrupts every session: draining began (out: false) or
// shutdown ran out of time (out: true). A session added later sees its
// context done itself (enter); one that ends meanwhile is in a phase
// that interrupt leaves alone.
func (w *h1Sessions) interrupt(out bool) {
	w.mu.Lock()
	all := make([]*h1, 0, len(w.set))
	for h := range w.set {
		all = append(all, h)
	}
	w.mu.Unlock()
	for _, h := range all {
		h.interrupt(out)
	}
}

// watchHTTP1 starts the server's watchers of its http1 sessions; stop ends them.
func (s *Server) watchHTTP1() (stop func()) {
	stopBegun := watch(s.drainBegun, func() {
		s.h1s.interrupt(false)
		if ls := s.loops.Load(); ls != nil {
			ls.Begin() // and those on the loops (h1Loop)
		}
	})
	stopOut := watch(s.drainCtx, func() { s.h1s.interrupt(true) })
	return func() { stopBegun(); stopOut() }
}

var backReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// serveHTTP1 serves the session's exchanges, first's first when it is
// not nil, the next request head due by until; parked reports that the
// session parked between requests and goes on, and ends, elsewhere
// (resume).
func (ss *session) serveHTTP1(fr *bufio.Reader, ctx, begun context.Context, until time.Time, first *http1.Request, retried bool) (parked bool) {
	h := &h1{session: ss, fr: fr, ctx: ctx, begun: begun, until: until, parkAfter: parkFirst,
		first: first, retried: retried}
	h.fw, _ = engine.NewRawWriter(ss.front) // nil: writeFront writes through the connection
	ss.srv.h1s.add(h)
	return h.serve()
}

// runHTTP1From carries on, on a goroutine, an http1 session a relay loop
// began (h1Loop.handOff): prefix is what the loop read of the client and
// did not use, first a request it read (nil: none).
func (ss *session) runHTTP1From(prefix []byte, first *http1.Request, retried bool) {
	parked := false
	defer func() {
		if p := recover(); p != nil {
			ss.panicked(p)
		}
		if !parked {
			ss.end()
		}
	}()
	fr := frontReaders.Get().(*bufio.Reader)
	r := rawReader(ss.front)
	if len(prefix) > fr.Size() {
		fr = bufio.NewReaderSize(nil, len(prefix)) // putFrontReader drops it
	}
	if len(prefix) > 0 {
		r = io.MultiReader(bytes.NewReader(prefix), r)
	}
	fr.Reset(r)
	// The whole prefix into fr's buffer, from its first read: what then
	// reads the socket itself (a tunnel's relay, a park) finds in fr
	// every byte that came before, where the rest of the prefix was lost
	// behind the MultiReader.
	_, _ = fr.Peek(len(prefix))
	parked = ss.serveHTTP1(fr, ss.srv.drainCtx, ss.srv.drainBegun, time.Now().Add(ss.ln.IdleTimeout), first, retried)
}

// loopHTTP1 tells whether b's http1 sessions run on the relay loops when
// their listener accepts bare connections (h1Loop): its connections are
// shared by every client and carry no PROXY header.
func loopHTTP1(b config.Backend) bool {
	return b.Protocol == config.ProtocolHTTP1 && b.Source != config.SourceClient && b.SendProxyProtocol == config.SendOff
}

// serve runs exchanges until the front leg ended (false), or the session
// parked (true): then it touches nothing of the session any more.
func (h *h1) serve() (parked bool) {
	defer func() {
		if !parked {
			h.srv.h1s.remove(h)
		}
	}()
	if parked = h.exchanges(); parked {
		// resume may run the session on another goroutine already: no
		// back leg ended beside, as none does before a park.
		return true
	}
	h.joinBack() // a back leg ending beside a front that ended otherwise
	if h.fr != nil {
		putFrontReader(h.fr) // the front leg ended: nothing reads it any more
		h.fr = nil
	}
	return false
}

// exchanges reads requests and runs their exchanges until the front leg
// ended (false) or the session parked (true).
func (h *h1) exchanges() (parked bool) {
	for {
		req, err := h.first, error(nil)
		if h.first = nil; req == nil {
			req, err = h.readRequest()
		}
		if err == errParked {
			return true
		}
		if err != nil {
			h.endFront(err)
			return false
		}
		closing, tunnel := h.exchange(req)
		switch {
		case tunnel:
			h.fr = nil // the tunnel took what it held
			return false
		case h.ended:
			return false
		case closing:
			if h.awaitsEOF {
				h.rec.Note(policy.Front, policy.ReasonCloseDelimited)
			}
			if h.drainClosed {
				h.rec.Note(policy.Front, policy.ReasonDraining)
			}
			// A response that closes the connection may be read to EOF
			// (rule 1), framed or not: HTTP/1.0 clients and ab do; one
			// that closes first was not waiting.
			h.end(engine.Ending{AwaitsEOF: h.awaitsEOF, MayAwaitEOF: true})
			return false
		}
		now := time.Now()
		h.until, h.owedBy = now.Add(h.ln.IdleTimeout), now.Add(h.ln.Close.PeerFinGrace) // owedBy: should draining begin meanwhile
	}
}

// waitsDraining reports that draining waits for the client's next
// request: a new connection's first (fresh), or one an answer let it
// send (owed).
func (h *h1) waitsDraining() bool { return h.fresh() || h.owed() }

// owed reports that draining waits on for the client's next request
// (owedWait).
func (h *h1) owed() bool { return owedWait(h.front, &h.owedBy, time.Now(), h.ln.Close.PeerFinGrace) }

// owedWait reports that draining waits on for the next request of the
// client on front: an answer whose head went before draining began said
// nothing of a close, and the client may send its next request as it
// reads the answer's end; closing then would refuse it (late_data). The
// wait lasts while the client still takes an answer (the proxy's send
// queue toward it), and grace (the front leg's peer_fin_grace) after it
// or after the exchange's end, which by holds; such a request is
// answered with Connection: close. idle_timeout bounds it, as any wait
// for a request.
func owedWait(front syscall.Conn, by *time.Time, now time.Time, grace time.Duration) bool {
	switch {
	case engine.SendQueue(front) > 0:
		*by = now.Add(grace)
	case by.IsZero():
		return false
	case !now.Before(*by):
		*by = time.Time{}
		return false
	}
	return true
}

// resume goes on with a parked session, on a goroutine of its own, once
// its wait ended: the client sent something (or closed, or reset), the
// idle time ran out, or a watcher woke it. It carries the session to its
// end, as run does, unless it parks again.
func (h *h1) resume() {
	parked := false
	defer func() {
		if p := recover(); p != nil {
			h.panicked(p)
		}
		if !parked {
			h.session.end()
		}
	}()
	h.mu.Lock() // park has returned: the session is this goroutine's
	h.phase, h.wait = between, nil
	h.mu.Unlock()
	h.parkAfter = nextParkAfter(h.parkAfter, time.Since(h.parkedAt))
	h.fr = frontReader(h.front)
	parked = h.serve()
}

// parker is the server's parker, when this session may park: nil where
// there is none, or once parking failed for it.
func (h *h1) parker() *park.Parker {
	if h.noPark {
		return nil
	}
	return h.srv.parker.Load()
}

// park hands the client's socket to the server's parker, when the wait
// for a request has lasted h.parkAfter with nothing read and nothing
// interrupted it: the goroutine then ends (errParked) and resume goes on.
// Under mu, so that a watcher either sees the phase awaiting (and ends
// the wait itself) or parked (and wakes the parked socket). False: the
// session waits on here.
func (h *h1) park() bool {
	p := h.parker()
	if p == nil || h.fr.Buffered() > 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx.Err() != nil || h.shuttingDown() {
		return false
	}
	fd, err := engine.ConnFD(h.front) // open while parked: only the session closes it
	if err == nil {
		fr := h.fr
		h.fr, h.phase = nil, parked // before Park: resume may run at once
		h.spareGuard = nil          // nor a guard and its timer
		h.parkedAt = time.Now()
		if h.wait, err = p.Park(fd, h.until, h.resume); err == nil {
			putFrontReader(fr)
			if parkedHook != nil {
				parkedHook()
			}
			return true
		}
		h.fr, h.phase = fr, awaiting
	}
	h.noPark = true
	h.srv.log.Debug("http1: cannot park an idle session; it waits on its goroutine", zap.Error(err))
	return false
}

// errIdle: no request began within idle_timeout (or before draining
// began): the connection was idle between requests.
var errIdle = errors.New("no request")

// errDrainIdle: draining found no request begun: the idle connection
// ends now.
var errDrainIdle = fmt.Errorf("draining: %w", errIdle)

// draining reports that draining began, or that a reload replaced the
// session's backend: the front leg ends after the exchange in progress,
// so that the client's next connection gets the new configuration.
func (h *h1) draining() bool { return h.shuttingDown() || h.bk.retiring.Load() }

// shuttingDown reports that draining began: an idle connection ends now.
// One whose backend a reload replaced waits for its next request (at
// most idle_timeout), which it serves with Connection: close: closing it
// idle would lose a request already on its way, as a client's next
// request can be whenever the connection is closed under it.
func (h *h1) shuttingDown() bool { return h.begun.Err() != nil }

// readRequest waits up to idle_timeout for the first byte of the next
// request, then up to idle_timeout more for its whole head. Draining ends
// the first wait (an idle keep-alive connection closes at once); shutdown
// running out of time ends both.
func (h *h1) readRequest() (req *http1.Request, err error) {
	defer func() {
		if err != nil && err != errParked {
			h.leave() // the session ends the front leg: no watcher may touch it
		}
	}()
	if err := h.enter(awaiting); err != nil {
		return nil, err
	}
	if err := h.awaitRequest(); err != nil {
		if errors.Is(err, syscall.ECONNRESET) && h.fr.Buffered() == 0 {
			err = fmt.Errorf("%w: %w", errResetBetween, err)
		}
		return nil, err
	}
	_ = h.enter(head)
	req, err = http1.ReadRequest(h.fr, h.lim)
	if req != nil { // a head refused once whole came in too
		h.rec.Received(policy.Front, int64(len(req.Raw)))
	}
	if err != nil {
		return nil, err
	}
	_ = h.enter(between)
	return req, nil
}

// enter makes p the session's phase and sets the client's read deadline
// for it: until (or h.parkAfter from now, if sooner) while a request is
// awaited, idle_timeout from now while its head is read, none between;
// now when what p waits for is already interrupted. Under mu, so that a
// watcher firing meanwhile either sees p or is seen here.
func (h *h1) enter(p h1Phase) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.phase = p
	var d time.Time
	switch {
	case p == between:
	case h.ctx.Err() != nil, p == awaiting && h.shuttingDown() && !h.waitsDraining():
		d = time.Now()
	case p == awaiting:
		d = h.until
		if h.shuttingDown() && h.owedBy.After(time.Now()) && h.owedBy.Before(d) {
			d = h.owedBy // owed: then looked at again (awaitRequest)
		}
		if at := time.Now().Add(h.parkAfter); at.Before(d) && h.parker() != nil && !h.shuttingDown() {
			d = at // then park (not while draining: a fresh connection waits on)
		}
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
	case h.phase == parked:
		h.wait.Wake() // resume finds the wait interrupted (enter)
	}
}

// startGuard starts the guard of an exchange on bc; one already out of
// time is drained at once.
func (h *h1) startGuard(bc *net.TCPConn) {
	g := h.spareGuard
	if h.spareGuard = nil; g == nil {
		g = new(engine.Guard)
	}
	g.Restart(h.ln.IdleTimeout, h.front, bc)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.guard, h.phase = g, guarded
	if h.ctx.Err() != nil {
		g.Drain()
	}
}

// stopGuard ends the exchange's guard and says whether, and why, it
// interrupted the exchange. The guard is kept for the session's next
// exchange, out of the watchers' reach; a parked session drops it.
func (h *h1) stopGuard() engine.Stall {
	h.mu.Lock()
	g := h.guard
	h.guard, h.phase = nil, between
	h.mu.Unlock()
	why := g.Stop()
	h.spareGuard = g
	return why
}

// awaitRequest waits for the first byte of a request, or a request
// already buffered, until until; after h.parkAfter it parks the session
// (errParked). Draining interrupts the wait (enter, interrupt): a
// connection with no request begun is idle and is closed, unless its
// next request reached the kernel as draining began (then it is read and
// answered, with Connection: close), or it has had none yet (fresh).
func (h *h1) awaitRequest() error {
	for {
		if h.shuttingDown() && h.fr.Buffered() == 0 && !h.waitsDraining() {
			return h.drainingIdle()
		}
		_, err := h.fr.Peek(1)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if h.ctx.Err() != nil {
			return errIdle
		}
		if !time.Now().Before(h.until) {
			return h.idleRanOut()
		}
		if h.shuttingDown() && !h.waitsDraining() {
			return h.drainingIdle()
		}
		if h.shuttingDown() { // a new connection's first request may be on its way, or an owed one
			if err := h.enter(awaiting); err != nil {
				return err
			}
			continue
		}
		// h.parkAfter passed with nothing read.
		if h.park() {
			return errParked
		}
		if err := h.enter(awaiting); err != nil {
			return err
		}
	}
}

// idleLookHook, when set (tests), is called as idle_timeout ran out
// between requests, before the session looks whether one waits in the
// kernel; atomic, as the loops outlive a test.
var idleLookHook atomic.Pointer[func()]

func idleLook() {
	if f := idleLookHook.Load(); f != nil {
		(*f)()
	}
}

// idleRanOut is awaitRequest's answer once idle_timeout ran out with
// nothing of a request read: nil (read it, its head due idle_timeout
// from now) when its bytes wait in the kernel, unseen yet (a timer is
// no later than the bytes), else errIdle. A request that reached the
// proxy is never left unanswered for an idle connection's close.
func (h *h1) idleRanOut() error {
	idleLook()
	if engine.Unread(h.front) {
		return nil
	}
	return errIdle
}

// fresh says the client has sent nothing yet: a connection accepted
// before draining began is not an idle keep-alive one, and waits for its
// first request (idle_timeout at most) as it would have.
func (s *session) fresh() bool { return s.rec.Record().Front.BytesIn == 0 }

// drainIdleHook, when set (tests), is called as a session that read
// nothing of a next request looks whether one waits in the kernel.
var drainIdleHook func()

// drainingIdle is awaitRequest's answer once draining began with nothing
// of a request read: nil (read it) when its bytes wait in the kernel,
// else errIdle.
func (h *h1) drainingIdle() error {
	if drainIdleHook != nil {
		drainIdleHook()
	}
	if engine.Unread(h.front) {
		return nil
	}
	return errDrainIdle
}

// endFront ends the session after reading a request failed: the client
// closed or went idle between requests, stopped midway through a head,
// sent a bad request, or reset.
func (h *h1) endFront(err error) {
	switch {
	case errors.Is(err, errResetBetween):
		// The engine tells from what the client left unacknowledged
		// whether the reset cut anything.
		h.end(engine.Ending{Cut: true, Why: policy.ReasonPeerReset, Between: true})
	case errors.Is(err, io.EOF):
		h.end(engine.Ending{PeerFIN: true})
	case errors.Is(err, errIdle):
		// Nothing of a request arrived: the connection was idle, nothing
		// is cut; it ends by its policy.
		why := policy.ReasonIdle
		if h.ctx.Err() != nil || h.shuttingDown() || errors.Is(err, errDrainIdle) && time.Now().Before(h.until) {
			why = policy.ReasonDraining
		}
		h.rec.Note(policy.Front, why)
		h.end(engine.Ending{})
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The client's FIN came in the middle of a head: it left before
		// its request was complete, and learns by a reset that it was
		// not served. What came of the head came in.
		h.rec.Outcome(engine.OutcomeClientAborted, errors.New("read request head: the client closed before the head was complete"))
		h.end(engine.Ending{PeerFIN: true, Cut: true, Why: policy.ReasonCut})
	case errors.Is(err, os.ErrDeadlineExceeded):
		// A head begun and not finished within idle_timeout (what came
		// of it counts as received: End).
		h.rec.Outcome(h.timeoutOutcome(), fmt.Errorf("read request head: %w", errHeadTimeout))
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
	h.joinBack()
}

// errResetBetween: the client reset its connection while it was awaited,
// nothing of a next request in.
var errResetBetween = errors.New("reset between requests")

// errHeadTimeout: a request head begun and not whole within idle_timeout.
var errHeadTimeout = errors.New("no whole head within idle_timeout")

// writeError answers the client with a short error response that closes
// the connection.
func (h *h1) writeError(status int, text string) {
	n, _ := io.WriteString(h.front, errorResponse(status, text))
	h.rec.Sent(policy.Front, int64(n))
}

// errorResponse is the short response the proxy answers with itself
// (400, 502, 503, 504), closing the connection.
func errorResponse(status int, text string) string {
	body := fmt.Sprintf("%d %s\n", status, text)
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, text, len(body), body)
}

// backendFailed answers the client for a backend it could not use and
// records why.
func (h *h1) backendFailed(err error) {
	o := dialOutcome(err)
	h.rec.Outcome(o, err)
	if o == engine.OutcomeDialFailed || o == engine.OutcomeFamilyMismatch {
		h.writeError(502, "Bad Gateway") // the backend's failure
		return
	}
	h.writeError(503, "Service Unavailable") // ours: ports, the pool's cap, shutdown
}
