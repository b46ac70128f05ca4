package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/http1"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

// h1Loop is an http1 session run by one of the relay loops, as a state
// machine: no goroutine, no stack, while it waits. It reads a request
// head, sends it on a pooled backend connection, relays the response
// (bytes unchanged but for the Connection header) and puts the
// connection back, as h1 does on a goroutine, with the same records.
// A request body goes to the backend as it comes, while the response is
// read (an early response is relayed at once, and so is a 100 Continue
// the client waits for); a chunked one is held with its head until it
// ended, spillLimit of it came or spillAfter passed (unless the client
// waits for a 100 Continue). What it does not take goes to a goroutine
// (handOff) at a request's start, before anything of it was sent: an
// upgrade or CONNECT with a body, a head it cannot parse or that is
// larger than its buffer, a client that stopped midway through a head,
// and a request for
// which no backend connection is ready without a wait. Each leg it ends
// alone the loop ends (engine.Runner.End), as its close policy says. A
// session that becomes a tunnel (101, or CONNECT answered 2xx) is relayed
// both ways on the same loop (engine.Runner.Relay), as a tcp session.
type h1Loop struct {
	ss    *session
	rn    *engine.Runner
	front *engine.TaskSock
	in    []byte // the client's bytes not yet handled: in[:inN]; pooled, nil while none
	inN   int
	tried int // inN when a parse last found the head not whole: parse again only with more
	// intake: the PROXY header the listener asks for is still to read,
	// until intakeBy (proxy_protocol_timeout after the accept).
	intake   bool
	intakeBy time.Time
	until    time.Time // the wait for the next request ends: idle_timeout after the last exchange
	owedBy   time.Time // peer_fin_grace after the last exchange: the wait draining grants a request its answer let the client send (owed)
	// headBy: a head begun must be whole by then (idle_timeout after its first byte).
	headBy   time.Time
	begun    bool // draining began: an idle session ends, a response says Connection: close
	drained  bool // shutdown ran out of time: what runs is cut
	over     bool // the task ended: nothing of it runs any more
	units    int  // legs the loop is still ending (Runner.End)
	finished bool // the session's end was started

	x *h1Exchange // the exchange in progress, nil between requests (from exchanges)

	// kept is the last exchange's backend connection, kept on the loop
	// for the session's next request until keepUntil, then given back to
	// the pool: a client that comes back at once costs no pool hand-out,
	// no liveness check and no epoll_ctl. An edge on it meanwhile (bytes
	// the backend should not send, its FIN) closes it.
	kept      *pool.Conn
	keptSock  *engine.TaskSock
	keepUntil time.Time

	// pipe carries large bodies from the backend to the client (splice):
	// made for the first of a run of them, closed with the session, when
	// an exchange is cut with bytes in it, or once the session waited
	// keepFor for its next request (its descriptors are not an idle
	// keep-alive client's to hold).
	pipe engine.TaskPipe
}

// spliceFrom is the body size from which a body of known length is
// spliced; a close-delimited body is, once a read filled the buffer.
const spliceFrom = 64 << 10

// keepFor is how long a session keeps its backend connection for its
// client's next request (h1Loop.kept).
const keepFor = 20 * time.Millisecond

// h1Exchange is one request and its response on the loop.
type h1Exchange struct {
	req     *http1.Request
	bc      *pool.Conn
	back    *engine.TaskSock
	retried bool   // this is the request's second connection
	toBack  []byte // the request's bytes for the backend, from toOff on still to write
	toOff   int
	headUp  int   // bytes of toBack[toOff:] that are the request head (the rest is body)
	upLeft  int64 // Content-Length body bytes not yet taken from the client
	upChunk bool  // a chunked body whose end has not come from the client
	// hold: a chunked body is held with its head, nothing sent, until it
	// ended, spillLimit of it came or spillAfter passed (holdBy; as spill
	// on a goroutine); upScan finds its end and refuses a malformed one.
	hold   bool
	holdBy time.Time
	upScan http1.ChunkScanner
	up     []byte // pooled: toBack's storage for body bytes, nil while none
	// upBy: the response is whole and the request body is not; the client
	// may be silent until then (peer_fin_grace after the body last moved),
	// as on a goroutine.
	upBy time.Time
	// bodyCame: a byte of the request body came from the client;
	// continued: a 100 Continue went to it. A final answer to Expect:
	// 100-continue with neither owes no body (notOwed).
	bodyCame, continued bool
	sent                bool // a byte of the request went to the backend

	bin      []byte // the backend's bytes not yet handled: bin[:binN]; pooled
	binN     int
	tried    int             // binN when a parse last found the head not whole
	resp     *http1.Response // the final response's head, once read
	out      []byte          // bytes for the client, from outOff on not yet written; pooled
	outOff   int
	headLeft int  // bytes of out that are a response head (the rest is body)
	started  bool // a response byte went to the client
	closing  bool // the front leg ends after this exchange
	cutBack  bool // the backend connection is reset
	// early: the final response came before the request was all sent,
	// or the backend's kernel had not taken all of it when the exchange
	// ended: the connection is not reused.
	early bool
	// upErr: writing the request body failed (the backend reset or
	// closed), whose error the read for the response, then EOF, lacks.
	upErr    error
	chunks   http1.ChunkScanner
	left     int64 // Length: body bytes still to come
	bodyDone bool
	tunnel   bool // the response made the session a tunnel: relayed both ways once its head is out
	backFIN  bool // the backend's FIN ended the response (UntilClose)
	bulk     bool // a read of the body filled the buffer
	endFront bool // the front leg ends once out is written: the exchange failed or was answered here
	cutFront bool // and is reset
	deliver  bool // once out is written and the client acknowledged it
	// moved: the last time a byte moved in the exchange (idle_timeout
	// without one: stalled), looked at when lookAt comes; unacked, the
	// legs' send queues when sampled (lookIdle).
	moved, lookAt, sampled time.Time
	unacked                int
	// awaitsEOF, drainClosed: why the front leg ends, for its record.
	awaitsEOF, drainClosed bool
	// take: the exchange is over and the backend's kernel has not taken
	// all of the request; the session waits for it to (awaitTaken), next
	// looking at takeAt. Zero takeAt: no such wait.
	take   takeWait
	takeAt time.Time
}

// loopExchangeHook, when set (tests), is called as each exchange starts
// on a loop.
var loopExchangeHook func()

// quietHook, when set (tests), says in Runner.Quiet's place whether an
// idle backend connection may be taken without the pool's peek.
var quietHook func(fd int) bool

// loopBufSize is the size of the pooled buffers a loop session reads
// heads and bodies into; a request head longer than that goes to a
// goroutine, a response head grows its buffer up to the head limit.
const loopBufSize = 16 << 10

// loopKeep is what one loop keeps of its sessions' ended exchanges for
// the next: buffers, exchanges, parsed heads (with their storage) and a
// reader to parse PROXY headers with. Only the loop's goroutine touches it
// (engine.Runner.Local): no lock, none of sync.Pool's pinning, which took
// about 2 % of a keep-alive request's CPU at eight gets and puts a
// request. Each list holds at most keepMax: what was in use at once on
// the loop, not what its idle sessions hold (they hold none).
type loopKeep struct {
	bufs      []*[loopBufSize]byte // arrays: a slice would be boxed
	exchanges []*h1Exchange
	requests  []*http1.Request
	responses []*http1.Response
	hr        headReader
}

// keepMax caps each of a loop's lists: 64 buffers are 1 MiB.
const keepMax = 64

// keepOf is rn's loop's keep, made at its first use. Looked up at each
// use, never cached in a session: a session's loop is the one running it.
func keepOf(rn *engine.Runner) *loopKeep {
	p := rn.Local()
	k, _ := (*p).(*loopKeep)
	if k == nil {
		k = newLoopKeep()
		*p = k
	}
	return k
}

func newLoopKeep() *loopKeep {
	return &loopKeep{hr: headReader{br: bufio.NewReaderSize(nil, loopBufSize)}}
}

// take is the last of list, or a fresh one.
func take[T any](list *[]*T) *T {
	n := len(*list)
	if n == 0 {
		return new(T)
	}
	v := (*list)[n-1]
	(*list)[n-1] = nil
	*list = (*list)[:n-1]
	return v
}

// give keeps v in list, unless list is full.
func give[T any](list *[]*T, v *T) {
	if len(*list) < keepMax {
		*list = append(*list, v)
	}
}

func (k *loopKeep) buf() []byte { return take(&k.bufs)[:] }

// putBuf keeps b if it is a whole loop buffer (of their capacity, so from
// its start); anything else is left to the GC.
func (k *loopKeep) putBuf(b []byte) {
	if cap(b) == loopBufSize {
		give(&k.bufs, (*[loopBufSize]byte)(b[:loopBufSize]))
	}
}

// startHTTP1Loop hands a bare http1 session to the loops; false: they
// refused and nothing was done.
func (ss *session) startHTTP1Loop() bool {
	ls := ss.srv.loops.Load()
	if ls == nil || ss.bare < 0 || !loopHTTP1(ss.bk.cfg) {
		return false
	}
	now := time.Now()
	h := &h1Loop{ss: ss, until: now.Add(ss.ln.IdleTimeout)}
	if ss.ln.ProxyProtocol != config.ProxyProtocolOff {
		if ss.refusedUnread() {
			return false
		}
		h.intake, h.intakeBy = true, now.Add(ss.ln.ProxyProtocolTimeout)
	} else {
		ss.rec.Intake("none", ss.rec.Client())
	}
	return ss.startTask(ls, h)
}

// refusedUnread says the listener refuses the client's PROXY header
// before reading it (required, from an untrusted source): readIntake
// does that on a goroutine.
func (ss *session) refusedUnread() bool {
	return ss.ln.ProxyProtocol == config.ProxyProtocolRequired && !isTrusted(ss.rec.Client().Addr(), ss.ln.ProxyProtocolTrusted)
}

// startTask hands the session's bare client socket to the loops, with t
// to run it; false: they refused, and the socket is the session's still.
func (ss *session) startTask(ls *engine.Loops, t engine.Task) bool {
	ss.eng = ss.engine(ss.srv.drainCtx, ss.srv.kill)
	fd := ss.bare
	ss.bare = -1 // the loop's, before it can run the task
	if err := ls.StartOn(ss.home, t, fd); err != nil {
		ss.bare = fd
		return false
	}
	return true
}

// Start implements engine.Task.
func (h *h1Loop) Start(rn *engine.Runner, front *engine.TaskSock) {
	h.rn, h.front = rn, front
	h.rn.Schedule(h.until)
}

// Ready implements engine.Task: the client's or the backend's socket has
// news; the session moves on as far as it can.
func (h *h1Loop) Ready(s *engine.TaskSock) {
	if s != nil && s == h.keptSock && s.Readable() {
		h.keptEdge()
	}
	h.step()
}

// stepBudget is how many steps a session takes in one turn of its loop
// before the loop's other sessions get theirs (a long body's reads and
// writes, a client's pipelined requests).
const stepBudget = 32

// step moves the session on until it waits for an edge or a timer, or
// used its turn (then it goes on after the loop's other sessions).
func (h *h1Loop) step() {
	n := 0
	for !h.over && h.advance() {
		if n++; n == stepBudget {
			h.rn.Again()
			break
		}
	}
	if !h.over {
		h.schedule()
	}
}

// advance takes one step; false: nothing to do until an edge or a timer.
func (h *h1Loop) advance() bool {
	x := h.x
	switch {
	case h.intake:
		return h.readIntake()
	case x == nil:
		return h.readRequest()
	case x.headUp > 0 && !x.endFront: // the head first, whole
		return h.sendUp()
	}
	up := h.sending() && h.sendUp()
	return h.receive() || up
}

// receive moves the response on: to the client, then the next of it from
// the backend; the exchange ends once all is written.
func (h *h1Loop) receive() bool {
	x := h.x
	switch {
	case x.outOff < len(x.out):
		return h.flushOut()
	case x.endFront:
		h.finish()
		return true
	case x.tunnel:
		h.startTunnel()
		return false
	case x.resp == nil:
		return h.readResponse()
	case !x.bodyDone:
		return h.readBody()
	case h.sending() && x.notOwed():
		// A final answer to Expect: 100-continue, with no 100 before
		// it and no byte of the body yet: the client need not send the
		// body (RFC 9110, 10.1.1), and the exchange is over. It was
		// early: the connection closes, the back leg by its policy (the
		// backend declined the body; nothing was cut).
		x.upLeft, x.upChunk = 0, false
	case h.sending(): // the response is whole before the request body
		if x.upBy.IsZero() {
			x.upBy = h.rn.Now().Add(h.ss.ln.Close.PeerFinGrace)
		}
		return false
	case h.awaitTaken():
		return false
	}
	h.finish()
	return true
}

// awaitTaken reports whether the exchange, over, waits for the backend's
// kernel to take the rest of its request (takeWait). It decides whether
// a connection that would serve another request took all of this one: at
// once (one SIOCOUTQ for a request with a body), or, where the client's
// connection goes on (not closing, not draining), within the wait. Not
// taken, it is early: an answer to less than the whole request, and the
// connection is not reused. A byte, a FIN or a reset from the backend
// meanwhile ends the wait the same way: found by their edge, or, when the
// look that finds all taken comes first, by that look. The exchange
// finishes as soon as it reports false.
func (h *h1Loop) awaitTaken() bool {
	x := h.x
	if x.req.Framing == http1.NoBody || x.back == nil || !x.reusable() {
		return false
	}
	now := h.rn.Now()
	if x.takeAt.IsZero() {
		q := engine.SendQueue(x.back)
		switch {
		case q <= 0: // taken (or the queue unreadable: judged taken, as ever)
			return false
		case x.closing || h.draining(): // the client's connection ends anyway
			x.early = true
			return false
		}
		x.take.start(now, q, h.ss.bk.cfg.Close.PeerFinGrace)
		x.upBy, x.takeAt = time.Time{}, now.Add(x.take.poll)
		return true
	}
	if h.draining() {
		x.early = true
		return false
	}
	if x.back.Readable() {
		if _, ok, err := h.readBack(); ok || err != nil {
			// Bytes it should not send (binN), or its FIN or reset.
			x.early, x.backFIN = true, err == io.EOF
			return false
		}
	}
	if now.Before(x.takeAt) {
		return true // an edge of the client's: its bytes wait
	}
	taken, over, next := x.take.look(now, engine.SendQueue(x.back))
	if taken && (engine.Unread(x.back) || engine.PeerEnded(x.back)) {
		// Taken, and bytes or the backend's end came with it, their
		// edge not handled yet (a reset empties the send queue too).
		taken, over = false, true
	}
	if taken || over {
		x.early = over
		return false
	}
	x.takeAt = next
	return true
}

// schedule sets the session's timer: the end of the wait for a request
// or a head, or the exchange's idle_timeout.
func (h *h1Loop) schedule() {
	var at time.Time
	switch {
	case h.intake:
		at = h.intakeBy
	case h.x != nil && !h.x.takeAt.IsZero():
		// The response is out and whole: only the wait for the backend
		// to take the request's rest is due (a lookAt left in the past
		// would make the timer fire at every turn).
		at = h.x.takeAt
	case h.x != nil:
		at = h.x.lookAt
		if up := h.x.upBy; !up.IsZero() && up.Before(at) {
			at = up
		}
		if h.x.hold && h.x.holdBy.Before(at) {
			at = h.x.holdBy
		}
	case !h.headBy.IsZero():
		at = h.headBy
	default:
		at = h.until
		if h.shuttingDown() && h.owedBy.After(h.rn.Now()) && h.owedBy.Before(at) {
			at = h.owedBy // owed: then looked at again (readRequest)
		}
	}
	if (h.kept != nil || h.x == nil && h.pipe.Open()) && h.keepUntil.Before(at) {
		at = h.keepUntil
	}
	h.rn.Schedule(at)
}

// Due implements engine.Task: a wait ran out.
func (h *h1Loop) Due(now time.Time) {
	if !now.Before(h.keepUntil) {
		h.releaseKept()
		if h.x == nil {
			h.pipe.Close() // empty: the exchange that used it ended
		}
	}
	switch x := h.x; {
	case h.over:
		return
	case h.intake:
		if !now.Before(h.intakeBy) {
			h.intakeEnds(nil, errSilent)
		}
	case x != nil && x.hold && !now.Before(x.holdBy):
		h.releaseHold() // held long enough: the request goes, however far its body came
	case x != nil && !x.upBy.IsZero() && !now.Before(x.upBy) && x.toOff < len(x.toBack):
		// the backend is not taking what the client sent: the proxy's
		// backpressure, not the client's silence (idle_timeout bounds it)
		x.upBy = now.Add(h.ss.ln.Close.PeerFinGrace)
	case x != nil && !x.upBy.IsZero() && !now.Before(x.upBy):
		// The request was not all sent, nor will it be: not ok.
		h.rec().Outcome(engine.OutcomeTimeout, errBodySilent(h.ss.ln.Close.PeerFinGrace))
		h.stopUp()
	case x != nil && !x.takeAt.IsZero():
		// awaitTaken looks, as step calls it; its wait bounds itself.
	case x != nil:
		h.lookIdle(x, now)
	case !h.headBy.IsZero():
		if !now.Before(h.headBy) {
			h.rec().Outcome(h.timeoutOutcome(), fmt.Errorf("read request head: %w", errHeadTimeout))
			h.endFront(engine.Ending{Cut: true, Why: policy.ReasonCut})
		}
	case !now.Before(h.until):
		idleLook()
		if engine.Unread(h.front) {
			// A request reached the kernel as the wait ran out, its
			// event not handled yet: no idle connection. Its head is
			// due idle_timeout from now; the event reads it.
			h.headBy = now.Add(h.ss.ln.IdleTimeout)
			break
		}
		h.idle(policy.ReasonIdle)
	}
	h.step()
}

// lookIdle ends an exchange in which no byte moved for idle_timeout, as
// the guard of one on a goroutine does. Bytes a peer takes out of the
// proxy's kernel moved too: a socket with megabytes queued becomes
// writable again only once about half of them drained, and a slow reader
// takes them all the while (it was cut, 3 MB of an answer unread). Once
// the exchange is quiet for a quarter idle_timeout, the legs' send
// queues are read a quarter apart: below the first reading since bytes
// last moved, they are progress. (A peer's window opens a segment at a
// time: a reading a quarter after the last would miss a slow reader's.)
func (h *h1Loop) lookIdle(x *h1Exchange, now time.Time) {
	idle := h.ss.ln.IdleTimeout
	if now.Sub(x.moved) < idle/4 {
		x.lookAt = x.moved.Add(idle / 4)
		return
	}
	q := engine.SendQueue(h.front)
	if x.back != nil && q >= 0 {
		if b := engine.SendQueue(x.back); b >= 0 {
			q += b
		}
	}
	switch {
	case q < 0:
	case x.sampled.Before(x.moved): // the first reading since bytes moved
		x.unacked, x.sampled = q, now
	case q < x.unacked:
		x.moved, x.unacked, x.sampled = now, q, now
	}
	if now.Sub(x.moved) >= idle {
		h.stalled(engine.StalledIdle)
		return
	}
	x.lookAt = now.Add(min(idle/4, x.moved.Add(idle).Sub(now)))
}

// releaseKept gives the kept backend connection back to the pool.
func (h *h1Loop) releaseKept() {
	c := h.kept
	if c == nil {
		return
	}
	h.putBack(c, h.keptSock)
	h.kept, h.keptSock = nil, nil
}

// putBack gives c, idle, back to its pool, left in this loop's epoll set:
// its next user on this loop takes it as it is.
func (h *h1Loop) putBack(c *pool.Conn, s *engine.TaskSock) {
	h.rn.Leave(s)
	c.Bare.Home = h.rn.Loop()
	h.ss.sv.pool.Put(c)
}

// keptEdge: the kept backend connection is readable: bytes it should not
// send, or its FIN, or an edge left from its exchange. Unless a read says
// the last, it is closed (with an RST, as the pool evicts).
func (h *h1Loop) keptEdge() {
	var b [1]byte
	if _, err := h.keptSock.Read(b[:]); err == engine.ErrWouldBlock {
		return
	}
	h.rn.Close(h.keptSock, true)
	h.kept.Bare = nil // closed here
	h.ss.sv.pool.Release(h.kept)
	h.kept, h.keptSock = nil, nil
}

// Begun implements engine.Task: an idle session ends now, one in an
// exchange after it.
func (h *h1Loop) Begun() {
	h.begun = true
	h.step() // readRequest ends an idle session
}

// Drain implements engine.Task: shutdown ran out of time.
func (h *h1Loop) Drain(time.Time) {
	h.drained, h.begun = true, true
	switch {
	case h.over:
	case h.intake:
		h.intakeEnds(nil, errIntakeDrained)
	case h.x != nil && !h.x.takeAt.IsZero():
		// The response is out: the wait for the backend to take the
		// rest of the request ends at the step below (draining), and
		// its connection with the client's.
	case h.x != nil:
		h.stalled(engine.StalledDrain)
	case !h.headBy.IsZero():
		h.rec().Outcome(engine.OutcomeDrained, fmt.Errorf("read request head: %w", errHeadTimeout))
		h.endFront(engine.Ending{Cut: true, Why: policy.ReasonCut})
	default:
		h.idle(policy.ReasonDraining)
	}
	h.step()
}

// Crashed implements engine.Task: the loop reset the session's sockets.
func (h *h1Loop) Crashed(p any) {
	h.rec().Outcome(engine.OutcomeInternalError, fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
	if x := h.x; x != nil && x.bc != nil {
		h.ss.sv.pool.Release(x.bc)
		x.bc = nil
	}
	h.pipe.Close()
	switch {
	case h.kept != nil && h.keptSock == nil: // taken for an exchange, not watched yet
		h.ss.sv.pool.Discard(h.kept)
	case h.kept != nil: // reset with the task's sockets
		h.ss.sv.pool.Release(h.kept)
	}
	h.kept, h.keptSock = nil, nil
	h.over = true
	h.end()
}

func (h *h1Loop) rec() *engine.Recorder { return h.ss.rec }

// draining reports that draining began, or that a reload replaced the
// session's backend, as h1.draining.
func (h *h1Loop) draining() bool {
	return h.shuttingDown() || h.ss.bk.retiring.Load()
}

// shuttingDown reports that draining began (told by the loop, Begun, or
// seen here first): an idle session ends now. One whose backend a reload
// replaced waits for its next request, which it serves, as h1.shuttingDown.
func (h *h1Loop) shuttingDown() bool {
	if !h.begun && h.ss.srv.drainBegun.Err() != nil {
		h.begun = true
	}
	return h.begun
}

func (h *h1Loop) timeoutOutcome() engine.Outcome {
	if h.drained {
		return engine.OutcomeDrained
	}
	return engine.OutcomeTimeout
}

// idle ends a session with no request begun: nothing is cut.
func (h *h1Loop) idle(why policy.Reason) {
	h.rec().Note(policy.Front, why)
	h.endFront(engine.Ending{})
}

// readIntake reads the PROXY header the listener asks for, as readIntake
// does on a goroutine: the same refusals, records and bytes handed on.
func (h *h1Loop) readIntake() bool {
	hdr, used, err, done := readHeaderOn(keepOf(h.rn), h.front, &h.in, &h.inN)
	if !done {
		return false
	}
	if err == nil {
		h.consume(used)
	}
	h.intakeEnds(hdr, err)
	return !h.over
}

// readHeaderOn reads front's bytes into *buf, from *n on, until they hold
// a whole PROXY header or cannot begin one (done), or front has nothing
// more now (not done: an edge will say when). used is the header's
// length; err is why there is no header (io.EOF, a read error,
// proxyproto.ErrNoProxyProtocol, or the parser's).
func readHeaderOn(k *loopKeep, front *engine.TaskSock, buf *[]byte, n *int) (hdr *proxyproto.Header, used int, err error, done bool) {
	for front.Readable() {
		if *buf == nil {
			*buf = k.buf()
		}
		if need, _ := headerNeeds((*buf)[:*n]); need > len(*buf) { // a v2 header with a long TLV list
			*buf = append((*buf)[:*n], make([]byte, need-*n)...)
		}
		m, err := front.Read((*buf)[*n:])
		switch {
		case err == engine.ErrWouldBlock:
			return nil, 0, nil, false
		case err == nil && m == 0:
			return nil, 0, io.EOF, true
		case err != nil:
			return nil, 0, err, true
		}
		*n += m
		if hdr, used, err, done = headerIn(k, (*buf)[:*n]); done {
			return hdr, used, err, true
		}
	}
	return nil, 0, nil, false
}

// headerIn parses the PROXY header at b's start once b holds all of it
// (done), or says there is none (done, proxyproto.ErrNoProxyProtocol);
// not done: more bytes must come.
func headerIn(k *loopKeep, b []byte) (hdr *proxyproto.Header, used int, err error, done bool) {
	need, header := headerNeeds(b)
	switch {
	case !header:
		return nil, 0, proxyproto.ErrNoProxyProtocol, true
	case need < 0 || need > len(b):
		return nil, 0, nil, false
	}
	hr := k.headOver(b[:need])
	hdr, err = parseHeader(hr.br)
	return hdr, hr.done(), err, true
}

// judgeIntake judges what reading the PROXY header on a loop gave, as
// readIntake does: got is the bytes that came (then errSilent, the
// timeout, means a header cut short, or no header at all, as
// timedOutPartway says; without, EOF is a client that closed before
// sending anything).
func (ss *session) judgeIntake(hdr *proxyproto.Header, err error, got []byte) (intake, error) {
	switch {
	case errors.Is(err, errSilent) && len(got) > 0:
		err = timedOutPartway(ss.ln, headerBegun(got))
	case errors.Is(err, io.EOF) && len(got) == 0:
		err = errClosedEmpty
	}
	in := intake{version: "none", client: ss.rec.Client(), dest: ss.rec.Record().Front.Local}
	trusted := isTrusted(in.client.Addr(), ss.ln.ProxyProtocolTrusted)
	return in, in.judge(hdr, err, ss.ln, trusted)
}

// intakeEnds takes what reading the PROXY header gave: the session goes
// on to its requests, or is refused with an RST.
func (h *h1Loop) intakeEnds(hdr *proxyproto.Header, err error) {
	ss := h.ss
	in, err := ss.judgeIntake(hdr, err, h.in[:h.inN])
	if err != nil {
		h.rec().Outcome(intakeOutcome(err), err)
		h.inN = 0 // no payload: what came was the refused header's, as a tcp intake counts it
		h.endFront(engine.Ending{Cut: true, Why: policy.ReasonRefused})
		return
	}
	h.intake = false
	ss.rec.Intake(in.version, in.client)
	if h.inN > 0 { // the request's first bytes came with the header
		h.headBy = h.rn.Now().Add(ss.ln.IdleTimeout)
	}
	h.releaseIn()
}

// readRequest reads the next request head and, once it is whole, starts
// its exchange.
func (h *h1Loop) readRequest() bool {
	unread := false
	if h.shuttingDown() && h.inN == 0 {
		// No request begun in the proxy: idle, unless one reached the
		// kernel as draining began (its event not handled yet): that
		// one is read and answered, with Connection: close. A new
		// connection waits for its first request (idle_timeout at most).
		if drainIdleHook != nil {
			drainIdleHook()
		}
		if unread = engine.Unread(h.front); !unread && (h.ss.fresh() || h.owed()) {
			if !h.front.Readable() {
				return false // a new connection's first request may be on its way, or an owed one
			}
			// Readable with nothing unread: its FIN (SIOCINQ counts no
			// FIN), or a request come since: read on. Waiting would
			// miss the FIN's one event and hold the session (and the
			// drain) until idle_timeout.
		} else if !unread {
			h.idle(policy.ReasonDraining)
			return false
		}
	}
	if h.inN > h.tried && headWhole(h.in[:h.inN]) {
		return h.parseRequest()
	}
	if !h.front.Readable() && !unread {
		return false
	}
	if h.in == nil {
		h.in = keepOf(h.rn).buf()
	}
	if h.inN == len(h.in) {
		h.handOff(nil, false) // a head larger than the buffer
		return false
	}
	n, err := h.front.Read(h.in[h.inN:])
	switch {
	case err == engine.ErrWouldBlock:
		h.releaseIn()
		return false
	case err != nil:
		h.readFailed(err)
		return false
	case n == 0 && h.inN == 0:
		if at := h.front.ShutAt(); !at.IsZero() {
			// The FIN came while a request was answered (a client that
			// half-closed behind it): its edge says when.
			h.rec().PeerFINAt(policy.Front, at)
		}
		h.endFront(engine.Ending{PeerFIN: true})
		return false
	case n == 0:
		h.handOff(nil, false) // cut midway through a head: the goroutine records it
		return false
	}
	if h.inN == 0 {
		h.headBy = h.rn.Now().Add(h.ss.ln.IdleTimeout)
	}
	h.inN += n
	return true
}

// parseRequest parses a head that may be whole, and starts its exchange
// when it is one the loop takes.
func (h *h1Loop) parseRequest() bool {
	k := keepOf(h.rn)
	req := take(&k.requests)
	used, err := http1.ReadRequestIn(h.in[:h.inN], http1.Limits{}, req)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		k.putRequest(req)
		h.tried = h.inN // not whole yet: read on
		return true
	case err != nil || !loopable(req):
		k.putRequest(req)
		h.handOff(nil, false)
		return false
	}
	h.rec().Received(policy.Front, int64(len(req.Raw)))
	h.consume(used)
	return h.startExchange(req, false)
}

// headWhole reports that b may hold a whole head: an empty line ends it.
func headWhole(b []byte) bool {
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// readFailed: reading the client failed between requests or in a head.
func (h *h1Loop) readFailed(err error) {
	switch {
	case errors.Is(err, syscall.ECONNRESET) && h.inN == 0:
		// Nothing of a next request came: the engine tells from what
		// the client left unacknowledged whether the reset cut anything.
		h.endFront(engine.Ending{Cut: true, Why: policy.ReasonPeerReset, Between: true})
		return
	case errors.Is(err, syscall.ECONNRESET):
		h.rec().Outcome(engine.OutcomeClientReset, fmt.Errorf("read request: %w", err))
		h.endFront(engine.Ending{Cut: true, Why: policy.ReasonPeerReset})
		return
	}
	h.rec().Outcome(engine.OutcomeError, fmt.Errorf("read request: %w", err))
	h.endFront(engine.Ending{Cut: true, Why: policy.ReasonCut})
}

// consume drops the first n bytes of in.
func (h *h1Loop) consume(n int) {
	h.inN = copy(h.in, h.in[n:h.inN])
	h.tried = 0
	h.headBy = time.Time{}
	h.releaseIn()
}

// releaseIn gives the read buffer back when it holds nothing.
func (h *h1Loop) releaseIn() {
	if h.inN == 0 && h.in != nil {
		keepOf(h.rn).putBuf(h.in)
		h.in = nil
	}
}

// headReader parses a PROXY header found whole in a loop session's
// buffer: one a loop, as a parse ends before the next begins. (HTTP
// heads are parsed where they lie: http1.ReadRequestIn.)
type headReader struct {
	r  bytes.Reader
	br *bufio.Reader
}

// headOver is the loop's reader over b, for a head parser, until done.
func (k *loopKeep) headOver(b []byte) *headReader {
	hr := &k.hr
	hr.r.Reset(b)
	hr.br.Reset(&hr.r)
	return hr
}

// done says how many bytes of b the parser took.
func (hr *headReader) done() int {
	n := int(hr.r.Size()) - hr.r.Len() - hr.br.Buffered()
	hr.r.Reset(nil) // the loop holds no session's buffer
	hr.br.Reset(nil)
	return n
}

// loopable says the loop takes req's exchange: any request but an
// upgrade or CONNECT with a body.
func loopable(req *http1.Request) bool {
	if req.Upgrade || req.Method == "CONNECT" {
		return req.Framing == http1.NoBody
	}
	return req.Framing == http1.NoBody || req.Framing == http1.Length || req.Framing == http1.Chunked
}

// startExchange takes a backend connection for req, if one is ready
// without a wait, and starts sending the request; false: the session went
// to a goroutine with req.
func (h *h1Loop) startExchange(req *http1.Request, retried bool) bool {
	if !retried {
		h.rec().Unnote(policy.Back, policy.ReasonRetried) // an earlier request's retry
	}
	if h.kept != nil && !retryable(req) {
		h.keptEdge() // a request that cannot be sent again goes only on a connection still open
	}
	// The connection the exchange takes stays in kept until the
	// exchange holds it: a panic meanwhile (Crashed) frees its slot.
	bc, back := h.kept, h.keptSock
	if bc != nil && !retried {
		h.reuse(bc)
	} else {
		h.releaseKept()
		if bc = h.takeBackend(retryable(req) && !retried); bc == nil {
			h.handOff(req, retried)
			return false
		}
		h.kept, h.keptSock = bc, nil // not watched yet
		if back = h.watchBack(bc); back == nil {
			h.kept = nil
			h.handOff(req, retried)
			return false
		}
		h.keptSock = back
	}
	if loopExchangeHook != nil {
		loopExchangeHook()
	}
	now := h.rn.Now()
	k := keepOf(h.rn)
	x := take(&k.exchanges)
	head := req.HeadForBackend()
	*x = h1Exchange{req: req, bc: bc, back: back, retried: retried, toBack: head, headUp: len(head), moved: now,
		lookAt: now.Add(h.ss.ln.IdleTimeout / 4)}
	h.x = x
	h.kept, h.keptSock = nil, nil
	switch req.Framing {
	case http1.Length:
		x.upLeft = req.Length
		h.withHead()
	case http1.Chunked:
		x.upChunk, x.upScan = true, http1.ChunkScanner{Request: true}
		x.up = k.buf()
		if !req.ExpectContinue { // held: with Expect the client sends nothing before the 100 Continue
			x.hold, x.holdBy = true, now.Add(spillAfter)
			x.up = append(x.up[:0], head...)
			x.toBack = x.up
			return true // counted once sent
		}
	}
	h.rec().Request()
	return true
}

// withHead puts what the client sent of the body with the request's head
// (one write for a small request), when both fit in a buffer.
func (h *h1Loop) withHead() {
	x := h.x
	k := int(min(x.upLeft, int64(h.inN)))
	if k == 0 || len(x.toBack)+k > loopBufSize {
		return
	}
	x.up = append(append(keepOf(h.rn).buf()[:0], x.toBack...), h.in[:k]...)
	x.toBack = x.up
	x.upLeft -= int64(k)
	h.consume(k)
}

// retryable says req may be sent again on another connection when the
// first closed before any answer: no body, an idempotent method.
func retryable(req *http1.Request) bool {
	return req.Framing == http1.NoBody && idempotent(req.Method)
}

// reuse takes the kept connection for the session's next request, noted
// in the record as a connection from the pool.
func (h *h1Loop) reuse(c *pool.Conn) {
	c.Pooled, c.Reused = true, true
	c.Uses++
	h.rec().Acquiring()
	h.rec().Trying(h.ss.sv.addr)
	h.ss.connected(c)
	h.rec().Connecting(0)
}

// watchBack has this session's loop watch bc, just taken from the pool
// (bc's home is this loop from then on); nil: it could not, and bc is
// discarded.
func (h *h1Loop) watchBack(bc *pool.Conn) *engine.TaskSock {
	back, err := h.rn.Watch(bc.Bare.FD, bc.Bare.Home)
	if err != nil {
		h.ss.sv.pool.Discard(bc)
		return nil
	}
	bc.Bare.Home = h.rn.Loop()
	return back
}

// takeBackend takes a connection of the session's server (or, for its
// first, of the one the balancer puts first) that is idle in its pool or
// that the kernel connects inside connect(2); nil: none is ready now. A
// request that can still go again on another connection (retry: not
// sent again yet) takes an idle one that this loop left quiet as it is,
// without the pool's peek: one closed meanwhile ends the exchange at EOF
// before any answer, and the request goes again, on a connection peeked.
func (h *h1Loop) takeBackend(retry bool) *pool.Conn {
	var quiet func(int) bool
	if retry {
		quiet = h.rn.Quiet
		if quietHook != nil {
			quiet = quietHook
		}
	}
	return h.ss.readyBackend(h.rn.Loop(), quiet)
}

// readyBackend takes a backend connection for a session on loop (see
// h1Loop.takeBackend): bare, or nil when none is ready now. An idle one
// that loop watches already comes first: it costs no epoll_ctl, and
// none of the pool's peek where quiet vouches for it (pool.GetIdleQuiet).
func (ss *session) readyBackend(loop int, quiet func(int) bool) *pool.Conn {
	t0 := time.Now()
	sv := ss.sv
	if sv == nil {
		if ss.order == nil { // the balancer is asked once a session (h1's acquire takes this on)
			ss.order = ss.bk.order(ss.rec.Client().Addr())
		}
		sv = ss.order[0]
	}
	c := sv.pool.GetIdleQuiet(loop, quiet)
	if c == nil {
		c = sv.pool.DialNow()
	}
	if c == nil {
		return nil
	}
	if c.Bare == nil { // used on a goroutine before (h1)
		if err := rebare(c); err != nil {
			sv.pool.Discard(c)
			return nil
		}
	}
	ss.rec.Acquiring()
	ss.rec.Trying(sv.addr)
	ss.connected(c)
	ss.rec.Connecting(time.Since(t0))
	if ss.sv == nil {
		ss.use(sv)
		ss.order = nil
	}
	return c
}

// rebare makes c's socket a bare descriptor again: a duplicate, and
// c's *net.TCPConn closed (out of Go's netpoller).
func rebare(c *pool.Conn) error {
	fd, err := engine.ConnFD(c.TCPConn)
	if err == nil {
		fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	if err != nil {
		return err
	}
	local, peer := c.Addrs()
	_ = c.TCPConn.Close() // the duplicate keeps the socket: no FIN
	c.SetBare(&pool.Bare{FD: fd, Home: -1, Local: local, Peer: peer})
	return nil
}

// sending reports that bytes of the request are still to go to the
// backend.
func (h *h1Loop) sending() bool {
	x := h.x
	return !x.endFront && !x.cutBack && (x.toOff < len(x.toBack) || x.bodyLeft())
}

// sendUp writes the request to the backend: its head, then its body as
// the client sends it.
func (h *h1Loop) sendUp() bool {
	x := h.x
	if x.hold || x.toOff == len(x.toBack) {
		return h.takeUp()
	}
	if !x.back.Writable() {
		return false
	}
	n, err := x.back.Write(x.toBack[x.toOff:])
	switch {
	case err == engine.ErrWouldBlock:
		return false
	case err != nil && x.headUp > 0:
		h.noResponse(fmt.Errorf("send request to backend: %w", err))
		return true
	case err != nil:
		// The backend stopped taking the body: it may have answered
		// already (an early response), which is relayed.
		x.upErr = err
		h.stopUp()
		return true
	}
	x.toOff += n
	x.sent = x.sent || n > 0
	h.upMoved()
	hn := min(n, x.headUp)
	x.headUp -= hn
	if hn > 0 {
		h.rec().Sent(policy.Back, int64(hn))
	}
	if n > hn {
		h.rec().Relayed(true, int64(n-hn))
	}
	return true
}

// notOwed reports that the request body is owed no more: the request
// expected 100-continue, and its final answer came with no 100 before it
// and no byte of the body from the client.
func (x *h1Exchange) notOwed() bool {
	return x.req.ExpectContinue && !x.continued && !x.bodyCame && x.resp != nil
}

// bodyLeft reports that the request body is not all taken from the
// client.
func (x *h1Exchange) bodyLeft() bool { return x.upLeft > 0 || x.upChunk }

// takeUp takes the request body's next bytes from the client.
func (h *h1Loop) takeUp() bool {
	x := h.x
	switch {
	case !x.bodyLeft():
		return false
	case x.req.Framing == http1.Chunked:
		return h.takeChunk()
	case x.up == nil:
		x.up = keepOf(h.rn).buf()
	}
	b := x.up[:min(x.upLeft, int64(loopBufSize))]
	var n int
	if h.inN > 0 {
		n = copy(b, h.in[:h.inN])
		h.consume(n)
	} else if n = h.readUp(b); n == 0 {
		return x.endFront
	}
	x.upLeft -= int64(n)
	x.toBack, x.toOff = b[:n], 0
	x.bodyCame = true
	h.upMoved()
	return true
}

// upMoved: request bytes moved. Once the response is whole, the client's
// time to finish its body (peer_fin_grace) counts its silence from here:
// a client still sending is never cut (rule 2).
func (h *h1Loop) upMoved() {
	x := h.x
	x.moved = h.rn.Now()
	if !x.upBy.IsZero() {
		x.upBy = x.moved.Add(h.ss.ln.Close.PeerFinGrace)
	}
}

// readUp reads the request body's next bytes from the client into b; 0:
// none now, or the client left midway (then the exchange is cut:
// endFront).
func (h *h1Loop) readUp(b []byte) int {
	if !h.front.Readable() {
		return 0
	}
	n, err := h.front.Read(b)
	switch {
	case err == engine.ErrWouldBlock:
		return 0
	case err == nil && n == 0 && h.x.notOwed():
		// A client that closes once answered (curl does) owed no body:
		// its FIN ends the exchange, not an abort.
		h.x.upLeft, h.x.upChunk = 0, false
		return 0
	case err == nil && n == 0:
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		h.clientAborted(requestBodyErr(err))
		return 0
	}
	return n
}

// takeChunk takes the next bytes of a chunked body from the client,
// through the scanner: held with the head while x.hold, else on their way
// to the backend.
func (h *h1Loop) takeChunk() bool {
	x := h.x
	if h.inN == 0 {
		if h.in == nil {
			h.in = keepOf(h.rn).buf()
		}
		if h.inN = h.readUp(h.in); h.inN == 0 {
			h.releaseIn()
			return x.endFront
		}
	}
	k, done, err := x.upScan.Scan(h.in[:h.inN])
	if err != nil {
		h.badBody(err)
		return true
	}
	if x.hold {
		x.toBack = append(x.toBack, h.in[:k]...)
		x.up = x.toBack // grown past a pooled buffer's size, it is not given back
	} else {
		x.toBack, x.toOff = append(x.up[:0], h.in[:k]...), 0
	}
	h.consume(k)
	x.bodyCame = x.bodyCame || k > 0
	h.upMoved()
	x.upChunk = !done
	if x.hold && (done || len(x.toBack)-x.headUp >= spillLimit) { // or spillAfter: Due
		h.releaseHold()
	}
	return true
}

// releaseHold ends the hold of a chunked body with its head: what was
// held goes to the backend, and the rest as it comes.
func (h *h1Loop) releaseHold() {
	x := h.x
	x.hold = false
	if !x.sent && x.bc.Gone() {
		h.moveExchange() // none ready: the request goes, and fails as it would have
	}
	h.rec().Request()
}

// badBody: the client's chunked body is malformed: 400, as on a
// goroutine. A backend connection that got nothing of the request goes
// back to its pool as it was; one that got part of it is reset.
func (h *h1Loop) badBody(err error) {
	x := h.x
	h.rec().Outcome(engine.OutcomeBadRequest, requestBodyErr(err))
	if x.hold {
		h.putBack(x.bc, x.back)
		x.back, x.bc = nil, nil
	}
	h.answer(400, "Bad Request")
}

// clientAborted: the client ended (FIN or RST) before its request was
// whole. The backend got part of it and is reset; the client, which left
// mid-request, is reset too. A backend connection that got nothing (a
// chunked body still held with its head) goes back to its pool as it
// was, and what was held counts as received from the client.
func (h *h1Loop) clientAborted(err error) {
	x := h.x
	h.rec().Outcome(engine.OutcomeClientAborted, err)
	if x.hold {
		h.rec().Received(policy.Front, int64(len(x.toBack)-x.headUp))
		if x.bc != nil {
			h.putBack(x.bc, x.back)
			x.back, x.bc = nil, nil
		}
	}
	h.cut()
}

// stopUp stops sending the request, part of which the backend got: the
// backend stopped taking it, or the response is whole and the client did
// not finish its body within peer_fin_grace. The backend connection is
// reset after the exchange, and the front leg ends.
func (h *h1Loop) stopUp() {
	x := h.x
	x.cutBack, x.closing, x.upBy = true, true, time.Time{}
	x.toBack, x.toOff, x.upLeft, x.upChunk = nil, 0, 0, false
}

// readBack reads what the backend sent into bin; false: nothing now
// (err nil), or it ended (n 0) or failed (err).
func (h *h1Loop) readBack() (n int, ok bool, err error) {
	x := h.x
	if !x.back.Readable() {
		return 0, false, nil
	}
	if x.bin == nil {
		x.bin = keepOf(h.rn).buf()
	}
	if x.binN == len(x.bin) {
		if len(x.bin) >= 2*http1.DefaultMaxHeadBytes {
			return 0, false, fmt.Errorf("%w: head larger than %d bytes", http1.ErrBadResponse, http1.DefaultMaxHeadBytes)
		}
		x.bin = append(x.bin[:x.binN], make([]byte, len(x.bin))...)
	}
	n, err = x.back.Read(x.bin[x.binN:])
	switch {
	case err == engine.ErrWouldBlock:
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case n == 0:
		return 0, false, io.EOF
	}
	x.bulk = x.bulk || x.binN == 0 && n == len(x.bin)
	x.binN += n
	x.moved = h.rn.Now()
	return n, true, nil
}

// readResponse reads the response head and, once it is whole, starts
// relaying it.
func (h *h1Loop) readResponse() bool {
	x := h.x
	if x.binN > x.tried && headWhole(x.bin[:x.binN]) {
		return h.parseResponse()
	}
	_, ok, err := h.readBack()
	switch {
	case err != nil && x.binN == 0 && !x.started && x.upErr != nil && err == io.EOF:
		// The body's write took the backend's reset: its error says
		// why, the EOF after it does not.
		h.noResponse(fmt.Errorf("backend closed before responding: send request body: %w", x.upErr))
		return true
	case err != nil && x.binN == 0 && !x.started:
		h.noResponse(fmt.Errorf("backend closed before responding: %w", err))
		return true
	case err != nil:
		h.badResponse(fmt.Errorf("read response head: %w", err))
		return true
	}
	return ok
}

// parseResponse parses a head that may be whole: a 1xx goes to the
// client at once, a final one with the body bytes read with it.
func (h *h1Loop) parseResponse() bool {
	x := h.x
	k := keepOf(h.rn)
	resp := take(&k.responses)
	used, err := http1.ReadResponseIn(x.bin[:x.binN], x.req, http1.Limits{}, resp)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		k.putResponse(resp)
		x.tried = x.binN // not whole yet: read on
		return true
	case err != nil:
		k.putResponse(resp)
		h.badResponse(err)
		return true
	}
	h.rec().Received(policy.Back, int64(len(resp.Raw)))
	x.binN, x.tried = copy(x.bin, x.bin[used:x.binN]), 0
	if resp.Status/100 == 1 && resp.Status != 101 {
		x.continued = x.continued || resp.Status == 100
		h.queue(resp.HeadForClient(false)) // a copy
		k.putResponse(resp)
		return true
	}
	x.closing = x.req.Close || resp.Close
	if resp.Status != 101 && (h.sending() || x.upErr != nil) {
		// A final answer before the request was all sent (an early 413
		// or 417): whether the backend reads the rest, or takes it for
		// requests of its own, is unknown, and what it sends after the
		// answer answers nothing the proxy sent. Its connection is not
		// reused, and the client is told this one closes. (One written
		// whole into the socket before the answer came is told at the
		// exchange's end: finish.)
		x.early, x.closing = true, true
	}
	x.resp = resp
	if resp.Tunnel(x.req.Method) {
		// What bin holds past the head is the tunnel's. Its head goes as
		// the backend sent it: the connection carries the tunnel on, and
		// a "close" beside its Connection: Upgrade makes clients refuse
		// the upgrade.
		x.tunnel = true
		h.queue(resp.HeadForClient(false)) // a copy
		return true
	}
	if !x.closing && h.draining() {
		x.closing, x.drainClosed = true, true
	}
	switch resp.Framing {
	case http1.Length:
		x.left = resp.Length
	case http1.UntilClose:
		x.backFIN, x.awaitsEOF = true, true
	}
	x.bodyDone = resp.Framing == http1.NoBody || resp.Framing == http1.Length && resp.Length == 0
	h.queue(resp.HeadForClient(x.closing))
	if err := h.takeBody(); err != nil {
		h.badResponse(err)
	}
	return true
}

// takeBody moves what of the response body bin holds to what goes to
// the client.
func (h *h1Loop) takeBody() error {
	x := h.x
	if x.bodyDone || x.binN == 0 {
		return nil
	}
	var k int
	var err error
	switch x.resp.Framing {
	case http1.Length:
		k = int(min(x.left, int64(x.binN)))
		x.left -= int64(k)
		x.bodyDone = x.left == 0
	case http1.Chunked:
		k, x.bodyDone, err = x.chunks.Scan(x.bin[:x.binN])
	case http1.UntilClose:
		k = x.binN
	}
	x.emptyOut(keepOf(h.rn))
	x.out = append(x.out, x.bin[:k]...)
	x.binN = copy(x.bin, x.bin[k:x.binN])
	return err
}

// emptyOut makes out an empty buffer from k once all it held was written.
func (x *h1Exchange) emptyOut(k *loopKeep) {
	if x.outOff == len(x.out) {
		if x.out == nil {
			x.out = k.buf()
		}
		x.out, x.outOff, x.headLeft = x.out[:0], 0, 0
	}
}

// done gives the exchange, its buffers and its heads back to k.
func (x *h1Exchange) done(k *loopKeep) {
	x.dropBufs(k)
	if x.req != nil {
		k.putRequest(x.req)
	}
	if x.resp != nil {
		k.putResponse(x.resp)
	}
	*x = h1Exchange{}
	give(&k.exchanges, x)
}

// The heads of ended exchanges are kept with their storage for the next
// exchange's (http1.ReadRequestIn, ReadResponseIn): a keep-alive exchange
// parses both heads, where they lie in its buffers, without an
// allocation. A head is given back only once nothing
// uses it: its exchange ended, or the parse that read it did not start
// one. A request handed to a goroutine (handOff) is that goroutine's and
// never comes back.

// keptHeadBytes and keptFields bound the storage a kept head keeps: a
// rare large head is left to the collector.
const (
	keptHeadBytes = 4 << 10
	keptFields    = 64
)

func (k *loopKeep) putRequest(r *http1.Request) {
	raw, fields := keptStorage(r.Raw, r.Header)
	*r = http1.Request{Raw: raw, Header: fields}
	give(&k.requests, r)
}

func (k *loopKeep) putResponse(r *http1.Response) {
	raw, fields := keptStorage(r.Raw, r.Header)
	*r = http1.Response{Raw: raw, Header: fields}
	give(&k.responses, r)
}

// keptStorage is what a kept head keeps of its bytes and fields: emptied,
// or nothing of a large one.
func keptStorage(raw []byte, fields []http1.Field) ([]byte, []http1.Field) {
	if cap(raw) > keptHeadBytes || cap(fields) > keptFields {
		return nil, nil
	}
	return raw[:0], fields[:0]
}

// dropBufs gives the exchange's buffers back to k.
func (x *h1Exchange) dropBufs(k *loopKeep) {
	for _, b := range []*[]byte{&x.out, &x.bin, &x.up} {
		if *b != nil {
			k.putBuf(*b)
			*b = nil
		}
	}
	x.outOff, x.binN = 0, 0
}

// queue adds a head to what goes to the client.
func (h *h1Loop) queue(head []byte) {
	x := h.x
	x.emptyOut(keepOf(h.rn))
	x.out = append(x.out, head...)
	x.headLeft += len(head)
}

// flushOut writes what waits for the client.
func (h *h1Loop) flushOut() bool {
	x := h.x
	if h.front == nil || !h.front.Writable() {
		return false
	}
	write := h.front.Write
	if x.lastOut(h) {
		write = h.front.WriteLast // the FIN the front leg ends with takes them along
	}
	n, err := write(x.out[x.outOff:])
	switch {
	case err == engine.ErrWouldBlock:
		return false
	case err != nil:
		h.clientGone(err)
		return true
	}
	x.outOff += n
	x.moved = h.rn.Now()
	hn := min(n, x.headLeft)
	x.headLeft -= hn
	h.rec().Sent(policy.Front, int64(hn))
	h.rec().Relayed(false, int64(n-hn))
	if n > 0 {
		x.started = true
	}
	return true
}

// lastOut says that out holds the last bytes toward the client before
// the front leg ends with a FIN (finish, once they are written): the
// answer is whole and the session closes after it, or the proxy answered
// and ends the leg.
func (x *h1Exchange) lastOut(h *h1Loop) bool {
	switch {
	case x.cutFront:
		return false
	case x.endFront:
		return true
	}
	return x.closing && x.resp != nil && x.bodyDone && !x.tunnel && !h.sending()
}

// readBody relays the next bytes of the response body.
func (h *h1Loop) readBody() bool {
	x := h.x
	if x.binN == 0 && (h.pipe.Held() > 0 || h.pipe.Usable() && (x.resp.Framing == http1.Length && x.left >= spliceFrom ||
		x.resp.Framing == http1.UntilClose && x.bulk)) {
		return h.spliceBody()
	}
	if x.binN == 0 {
		_, ok, err := h.readBack()
		switch {
		case errors.Is(err, io.EOF) && x.resp.Framing == http1.UntilClose:
			x.bodyDone = true
			return true
		case err != nil:
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			h.backendGone(fmt.Errorf("copy body: %w", err))
			return true
		case !ok:
			return false
		}
	}
	if err := h.takeBody(); err != nil {
		h.backendGone(err)
	}
	return true
}

// spliceBody moves the next bytes of a large body from the backend to
// the client through the session's pipe.
func (h *h1Loop) spliceBody() bool {
	x := h.x
	max := spliceFrom << 4
	if x.resp.Framing == http1.Length {
		max = int(min(x.left, int64(max)))
	}
	held := h.pipe.Held()
	n, toClient, err := h.pipe.Move(x.back, h.front, max)
	if x.resp.Framing == http1.Length {
		x.left -= int64(n + h.pipe.Held() - held) // taken from the backend
	}
	if n > 0 {
		x.moved, x.started = h.rn.Now(), true
		h.rec().Relayed(false, int64(n))
	}
	switch {
	case err == engine.ErrWouldBlock:
		return n > 0
	case errors.Is(err, engine.ErrNoPipe):
		return true // nothing moved: readBody goes on through bin
	case errors.Is(err, io.EOF) && x.resp.Framing == http1.UntilClose:
		x.bodyDone = true
	case errors.Is(err, io.EOF):
		h.backendGone(fmt.Errorf("copy body: %w", io.ErrUnexpectedEOF))
	case err != nil && toClient:
		h.clientGone(err)
	case err != nil:
		h.backendGone(fmt.Errorf("copy body: %w", err))
	case x.resp.Framing == http1.Length && x.left == 0 && h.pipe.Held() == 0:
		x.bodyDone = true
	}
	return true
}

// noResponse: the backend closed or failed before any response byte. A
// pooled connection may have been closed by the backend as it was taken:
// the request is sent again, once, on another connection, as h1 does.
func (h *h1Loop) noResponse(err error) {
	x := h.x
	if !x.sent && x.bc.Pooled && h.moveExchange() {
		return
	}
	if x.bc.Pooled && !x.retried && retryable(x.req) {
		h.rec().Note(policy.Back, policy.ReasonRetried)
		req := x.req
		x.req = nil // the next exchange's, not given back by done
		h.dropBack(true)
		h.x.done(keepOf(h.rn))
		h.x = nil
		h.startExchange(req, true)
		return
	}
	h.rec().Outcome(engine.OutcomeBackendReset, err)
	h.answer(502, "Bad Gateway")
}

// moveExchange moves an exchange that sent nothing yet (a chunked body
// held with its head) off a connection the backend closed during the
// hold (a pooled one's idle timeout, or a fresh one's wait for a request
// head) onto one ready now: the closed one got no byte of the request,
// so any request may go. False: none was ready; the exchange fails as it
// would have.
func (h *h1Loop) moveExchange() bool {
	x := h.x
	bc := h.takeBackend(false) // peeked
	if bc == nil {
		return false
	}
	back := h.watchBack(bc)
	if back == nil {
		return false
	}
	h.rec().Note(policy.Back, policy.ReasonRetried)
	h.dropBack(true)
	x.bc, x.back = bc, back
	x.binN, x.tried, x.upErr = 0, 0, nil
	return true
}

func (h *h1Loop) badResponse(err error) {
	h.rec().Outcome(engine.OutcomeBadResponse, err)
	if h.x.started {
		h.cut()
		return
	}
	h.answer(502, "Bad Gateway")
}

// backendGone: the response was cut on the backend's side. What the
// backend sent before goes to the client first (what waits in out; the
// pipe holds nothing once a read failed, Move writes before it reads):
// the front leg is reset once the client acknowledged it all (finish).
func (h *h1Loop) backendGone(err error) {
	h.rec().Outcome(responseCutBy(err), fmt.Errorf("relay response: %w", err))
	x := h.x
	x.cutBack, x.closing, x.endFront, x.cutFront, x.deliver = true, true, true, true, true
}

// clientGone: writing the response to the client failed.
func (h *h1Loop) clientGone(err error) {
	x := h.x
	h.pipe.Close()
	x.cutBack, x.closing, x.endFront = true, true, true
	x.out, x.outOff = x.out[:0], 0
	if engine.ResetByPeer(h.front) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		h.rec().Outcome(engine.OutcomeClientReset, fmt.Errorf("relay response: %w", err))
		h.finishWith(engine.Ending{Cut: true, Why: policy.ReasonPeerReset})
		return
	}
	h.rec().Outcome(engine.OutcomeBackendReset, fmt.Errorf("relay response: %w", err))
	h.finishWith(engine.Ending{Cut: true, Why: policy.ReasonCut})
}

// cut ends the exchange with both legs reset at once: a response begun
// was cut (what waits for the client is dropped).
func (h *h1Loop) cut() {
	x := h.x
	h.pipe.Close()
	x.cutBack, x.closing, x.endFront, x.cutFront, x.deliver = true, true, true, true, false
	x.out, x.outOff = x.out[:0], 0
}

// stalled: no byte moved for idle_timeout, or shutdown ran out of time.
// A response not begun is answered (504, 503 at shutdown); one begun is cut.
func (h *h1Loop) stalled(why engine.Stall) {
	x := h.x
	o, status, text, err := stall(why, h.ss.ln.IdleTimeout)
	h.rec().Outcome(o, err)
	if x.started || x.endFront {
		h.cut()
		return
	}
	h.answer(status, text)
}

// answer answers the client from here (the backend failed) and ends the
// front leg once written; the backend connection is reset.
func (h *h1Loop) answer(status int, text string) {
	x := h.x
	x.cutBack, x.closing, x.endFront = true, true, true
	x.out, x.outOff = x.out[:0], 0
	h.queue([]byte(errorResponse(status, text)))
}

// finish ends the exchange: the backend connection goes back to the pool
// or ends; the front leg ends, or waits for the next request.
func (h *h1Loop) finish() {
	x := h.x
	if x.cutFront {
		h.finishWith(engine.Ending{Cut: true, Why: policy.ReasonCut, Deliver: x.deliver})
		return
	}
	if !x.reusable() {
		x.closing = true
	}
	if x.closing {
		if x.awaitsEOF {
			h.rec().Note(policy.Front, policy.ReasonCloseDelimited)
		}
		if x.drainClosed {
			h.rec().Note(policy.Front, policy.ReasonDraining)
		}
		// A response that closes the connection may be read to EOF
		// (rule 1), framed or not: HTTP/1.0 clients and ab do; one
		// that closes first was not waiting.
		h.finishWith(engine.Ending{AwaitsEOF: x.awaitsEOF, MayAwaitEOF: true})
		return
	}
	h.keep()
	if h.ss.sv.pool.Wanted() {
		// Another session waits at max_conns: the connection is its,
		// not kept for this client's next request, as on goroutines.
		h.releaseKept()
	}
	h.x.done(keepOf(h.rn))
	h.x = nil
	now := h.rn.Now()
	h.until, h.keepUntil = now.Add(h.ss.ln.IdleTimeout), now.Add(keepFor)
	h.owedBy = now.Add(h.ss.ln.Close.PeerFinGrace) // should draining begin meanwhile: owed
}

// owed reports that draining waits on for the client's next request
// (owedWait).
func (h *h1Loop) owed() bool {
	return owedWait(h.front, &h.owedBy, h.rn.Now(), h.ss.ln.Close.PeerFinGrace)
}

// finishWith ends the exchange's backend connection and then the front
// leg, as e says.
func (h *h1Loop) finishWith(e engine.Ending) {
	x := h.x
	if x.back != nil {
		switch {
		case x.cutBack || e.Cut:
			h.endBack(engine.Ending{Cut: true, Why: policy.ReasonCut}, 0)
		case x.reusable():
			h.keep()
			h.releaseKept() // the session ends: back to the pool at once
		default:
			h.endBack(engine.Ending{PeerFIN: x.backFIN}, x.binN)
		}
	}
	h.x.done(keepOf(h.rn))
	h.x = nil
	h.endFront(e)
}

// reusable says the exchange's backend connection can serve another
// request: its response was whole, it did not say close, nothing came
// after it, and nothing was cut or answered by the proxy.
func (x *h1Exchange) reusable() bool {
	return !x.cutBack && !x.endFront && !x.early && x.resp != nil && !x.resp.Close && x.binN == 0
}

// keep makes the exchange's backend connection the session's kept one.
func (h *h1Loop) keep() {
	x := h.x
	h.rec().Pooled()
	h.kept, h.keptSock = x.bc, x.back
	x.back, x.bc = nil, nil
}

// dropBack resets the backend connection and frees its slot.
func (h *h1Loop) dropBack(reset bool) {
	x := h.x
	h.rn.Close(x.back, reset)
	x.bc.Bare = nil // closed here
	h.ss.sv.pool.Release(x.bc)
	x.back, x.bc = nil, nil
}

// endBack ends the backend leg as its policy says, on the loop; its slot
// is freed once the socket is closed.
func (h *h1Loop) endBack(e engine.Ending, late int) {
	x := h.x
	bc, sv := x.bc, h.ss.sv
	h.units++
	h.rn.End(h.ss.eng, policy.Back, x.back, e, late, func() {
		sv.pool.Release(bc)
		h.unitDone()
	})
	x.back, x.bc = nil, nil
}

// endFront ends the front leg as its policy says, on the loop; the task
// is then over, and the session ends once every leg is closed.
func (h *h1Loop) endFront(e engine.Ending) {
	if h.over {
		return
	}
	h.over = true
	h.releaseKept()
	h.pipe.Close()
	late := h.inN
	h.inN = 0
	h.releaseIn()
	h.headBy = time.Time{}
	h.rn.Schedule(time.Time{})
	h.units++
	h.rn.End(h.ss.eng, policy.Front, h.front, e, late, h.unitDone)
	h.front = nil
	h.rn.Done()
	h.end()
}

// unitDone: a leg the loop ended is closed.
func (h *h1Loop) unitDone() {
	h.units--
	h.end()
}

// end starts the session's end once the task is over and every leg it
// handed to the loop is closed: on a goroutine, as it writes the record.
func (h *h1Loop) end() {
	if h.over && h.units == 0 && !h.finished {
		h.finished = true
		go h.ss.end()
	}
}

// startTunnel relays the client and the backend both ways on the loop,
// once the response's head is out: the bytes each sent past its head go
// first. The session ends when the relay does.
func (h *h1Loop) startTunnel() {
	x := h.x
	p := engine.Pending{Up: h.in[:h.inN], Down: x.bin[:x.binN]} // copied by Relay
	h.over = true
	h.releaseKept()
	h.pipe.Close()
	h.rn.Schedule(time.Time{})
	bc, sv := x.bc, h.ss.sv
	h.units++
	h.ss.eng.Tunnel = true // http1 takes no bet (rule 3), a tunnel's back leg neither
	h.rn.Relay(h.ss.eng, h.front, x.back, p, func() {
		sv.pool.Release(bc)
		h.unitDone()
	})
	h.front, x.back, x.bc = nil, nil, nil
	h.inN = 0
	h.releaseIn()
	h.x.done(keepOf(h.rn))
	h.x = nil
	h.rn.Done()
	h.end()
}

// handOff gives the session to a goroutine, h1, with what was read of
// the client past req (nil: a request not parsed, or none) and req, whose
// head the record counts already: the loop forgets the client's socket.
func (h *h1Loop) handOff(req *http1.Request, retried bool) {
	h.releaseKept()
	h.pipe.Close()
	fd := h.front.FD()
	err := h.rn.Unwatch(h.front)
	h.front = nil
	h.over = true
	h.rn.Schedule(time.Time{})
	h.rn.Done()
	prefix := append([]byte(nil), h.in[:h.inN]...)
	h.inN = 0
	h.releaseIn()
	ss := h.ss
	if err == nil {
		var c *net.TCPConn
		if c, err = fdConn(fd); err == nil {
			ss.front = c
			go ss.runHTTP1From(prefix, req, retried)
			return
		}
	}
	ss.bare = fd
	ss.refuse(engine.OutcomeError, fmt.Errorf("http1 from the loop to a goroutine: %w", err))
	h.finished = true
	go ss.end()
}
