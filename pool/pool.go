package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrPoolExhausted is returned by Get when MaxConns connections are open to
// the backend and none came free before the caller's context or
// ConnectTimeout ended.
var ErrPoolExhausted = errors.New("backend connection pool exhausted")

// ErrPoolClosed is returned by Get once Run has returned.
var ErrPoolClosed = errors.New("backend connection pool closed")

// Config describes one backend's pool. The zero value of every field but
// Address is usable.
type Config struct {
	Address        string        // host:port
	ConnectTimeout time.Duration // bounds each dial and each wait for a slot (0: only the caller's context)
	Warm           int           // idle never-used connections to keep ready (0: none)
	MaxIdleAge     time.Duration // idle connections older than this (since they became idle) are evicted with an RST (0: no age limit)
	MaxConns       int           // cap on connections to this backend, in use + idle (0: no cap)
	BackoffMin     time.Duration // first retry delay after a failed warm dial (0: 100ms)
	BackoffMax     time.Duration // longest retry delay (0: 10s)
	// DialBare, when set, dials every connection it can as a Bare (a
	// Get with a source in its context never: it dials with DialFunc).
	DialBare BareDialFunc
}

// DialFunc dials one connection; tests and the proxy pass a net.Dialer-based
// one (the proxy may set socket options). ctx carries ConnectTimeout.
type DialFunc func(ctx context.Context, address string) (*net.TCPConn, error)

// Stats is a snapshot of a pool's gauges and counters.
type Stats struct {
	Idle    int // connections in the idle list
	InUse   int // handed out by Get (or being dialed for one), not yet Put or Released
	Dialing int // warm connections being dialed by Run
	Waiting int // Gets waiting for a slot under MaxConns
	Failing int // consecutive backend dial failures; 0 after a successful dial

	Dialed            uint64 // successful dials
	DialFailures      uint64 // failed dials blamed on the backend (refused, timed out, unreachable)
	LocalDialFailures uint64 // failed dials that were ours (EADDRNOTAVAIL, EMFILE, …): never a backend failure
	Evicted           uint64 // connections the pool closed with an RST: aged, dead, surplus or at shutdown
	Dead              uint64 // of Evicted: found closed by the backend, reset, or carrying unexpected data
	Pooled            uint64 // Gets served from the idle list
	Reused            uint64 // Gets served a connection that had been Put before
}

// Pool keeps the connections to one backend. Its methods are safe for
// concurrent use.
type Pool struct {
	cfg  Config
	dial DialFunc
	log  *zap.Logger
	wake chan struct{} // capacity 1: a refiller may have work

	failing atomic.Bool // the refillers' dials fail: one of them retries
	// recovered (capacity 1): a session's dial succeeded while the
	// refillers' failed; the one that retries does so at once, not after
	// its backoff, so the warm connections and the log follow the backend
	// as soon as sessions see it back.
	recovered chan struct{}
	// inCall: the last bare dial was established inside connect(2), as
	// to a backend on this host (DialNow tries only then); before any, the
	// address is a loopback one.
	inCall atomic.Bool
	// speaksFirst: a never-used warm connection had bytes waiting (a
	// greeting: SMTP, FTP, MySQL, SSH): every warm one would be evicted
	// as it is taken, so no more are dialed (warmLocked).
	speaksFirst atomic.Bool
	retired     atomic.Bool // Retire: the backend left the configuration
	// waiting mirrors stats.Waiting for Wanted, which a session asks
	// at every exchange's end without the lock.
	waiting atomic.Int32

	mu      sync.Mutex
	idle    []*Conn       // oldest first; Get takes the newest from the end
	freed   chan struct{} // closed and replaced when a slot or an idle connection appears while Gets wait
	running bool
	closed  bool
	stats   Stats // Idle is len(idle), filled in by Stats
}

// New returns a pool for cfg. It starts nothing: Run keeps the warm
// connections and evicts; Get, Put and Release work without it. log's
// fields name the pool: the pool adds none (the proxy's logger already
// says backend and server, and a second "backend" key made lines that
// log pipelines reject or overwrite).
func New(cfg Config, dial DialFunc, log *zap.Logger) *Pool {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(10*time.Second, cfg.BackoffMin)
	}
	p := &Pool{
		cfg:       cfg,
		dial:      dial,
		log:       log,
		wake:      make(chan struct{}, 1),
		recovered: make(chan struct{}, 1),
		freed:     make(chan struct{}),
	}
	// A backend on a loopback address is on this host: its connects are
	// done inside the call from the first (and if not, the first dial
	// says so).
	if a, err := netip.ParseAddrPort(cfg.Address); err == nil && a.Addr().IsLoopback() {
		p.inCall.Store(true)
	}
	return p
}

// Stats returns a snapshot of the pool's gauges and counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Idle = len(p.idle)
	return s
}

// Get returns the newest idle connection that passes the liveness check, or
// else dials a new one, bounded by ConnectTimeout and ctx. At MaxConns it
// waits for a slot as long as both allow, then returns an error wrapping
// ErrPoolExhausted. Dial errors come wrapped ("dial backend ADDR: …") and stay
// matchable with errors.Is (syscall.EADDRNOTAVAIL, syscall.ECONNREFUSED, …).
// With a source in ctx (WithSource) it always dials.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	start := time.Now()
	_, own := Source(ctx)
	for {
		c, err := p.take(ctx, start, !own)
		if err != nil {
			return nil, err
		}
		if c == nil {
			return p.dialFor(ctx)
		}
		if p.usable(c, true) {
			return c, nil
		}
	}
}

// GetIdle is Get without a dial or a wait: the newest idle connection
// that passes the liveness check, or nil.
func (p *Pool) GetIdle() *Conn { return p.GetIdleFor(-1) }

// GetIdleFor is GetIdle for a caller on relay loop home: of the newest
// few idle connections, one that loop watches already (Bare.Home) comes
// first, as it takes no epoll_ctl to take on; home < 0 prefers none.
func (p *Pool) GetIdleFor(home int) *Conn { return p.GetIdleQuiet(home, nil) }

// GetIdleQuiet is GetIdleFor for a caller that can send its request again
// on another connection should this one turn out closed: a connection
// loop home watches whose descriptor quiet vouches for (no edge since it
// went idle: engine.Runner.Quiet) skips the liveness check's system call.
// A FIN that came after the loop last looked shows to the caller as the
// exchange's EOF, where the peek would have caught it a little earlier.
func (p *Pool) GetIdleQuiet(home int, quiet func(fd int) bool) *Conn {
	for {
		p.mu.Lock()
		var c *Conn
		if !p.closed {
			c = p.popIdleLocked(home)
		}
		p.mu.Unlock()
		if c == nil {
			return nil
		}
		vouched := quiet != nil && home >= 0 && c.Bare != nil && c.Bare.Home == home && quiet(c.Bare.FD)
		if p.usable(c, !vouched) {
			return c
		}
	}
}

// DialNow is Get for a caller that must not wait (the goroutine that
// accepts): a new bare connection in a slot free at once, returned only
// when the kernel established it inside connect(2), as it does to a
// backend on this host, and tried only while the last bare dial was so
// established, or before any to a loopback address (a backend elsewhere
// is never dialed here). The dial's
// context is done before it starts: a BareDialFunc answers such a
// context with a connection that needed no wait, or with the context's
// error, which is nobody's failure. nil: nothing was handed out (any
// socket was closed, the slot given back); the caller takes the way that
// can wait, Get.
func (p *Pool) DialNow() *Conn {
	if p.cfg.DialBare == nil || !p.inCall.Load() {
		return nil
	}
	p.mu.Lock()
	if p.closed || !p.roomLocked() {
		p.mu.Unlock()
		return nil
	}
	p.stats.InUse++
	p.mu.Unlock()
	c, err := p.dialFor(doneCtx) // gives the slot back when it fails
	if err != nil {
		return nil
	}
	return c
}

// doneCtx is DialNow's dial context, done from the start.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// take hands out the newest idle connection (if idleOK), or returns nil
// with a slot reserved for a dial, waiting at the cap.
func (p *Pool) take(ctx context.Context, start time.Time, idleOK bool) (*Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return nil, ErrPoolClosed
		}
		if idleOK {
			if c := p.popIdleLocked(-1); c != nil {
				return c, nil
			}
		}
		if p.roomLocked() {
			p.stats.InUse++
			return nil, nil
		}
		if err := p.waitLocked(ctx, start); err != nil {
			return nil, err
		}
	}
}

// usable checks an idle connection just taken by Get. It evicts it and
// returns false when it is too old or, probed, not alive; probe false
// is for a connection the caller's loop vouches for (GetIdleQuiet).
func (p *Pool) usable(c *Conn, probe bool) bool {
	if p.cfg.MaxIdleAge > 0 && time.Since(c.idleSince) > p.cfg.MaxIdleAge {
		p.evict(c, "max_idle_age")
		return false
	}
	if probe {
		if l := c.probe.check(c.raw); l != alive {
			p.noteSpeaksFirst(l, c.Uses)
			p.evict(c, l.String())
			return false
		}
	}
	c.Pooled = true
	c.Reused = c.Uses > 0
	p.mu.Lock()
	p.stats.Pooled++
	if c.Reused {
		p.stats.Reused++
	}
	p.mu.Unlock()
	return true
}

// dialFor dials a connection into the slot take reserved. A net.Dialer
// dial runs on a goroutine of its own that ends with it: its call chain is
// deep, and the caller's stack, grown for it, would stay grown (Go shrinks
// stacks only at a collection, by half) for the whole session it then
// relays.
func (p *Pool) dialFor(ctx context.Context) (c *Conn, err error) {
	defer func() {
		// Failed, or panicked (a session recovers its panics and lives on):
		// the slot reserved by take is given back either way.
		if c == nil {
			p.mu.Lock()
			p.stats.InUse--
			p.signalLocked()
			p.mu.Unlock()
			p.wakeRefiller()
		}
	}()
	if _, own := Source(ctx); p.cfg.DialBare != nil && !own {
		// A bare dial's chain is shallow, and the caller hands its
		// sockets to the relay loops and ends: no stack to keep small.
		if c, err = p.dialConn(ctx); err != nil {
			return nil, err
		}
		c.out = true
		return c, nil
	}
	type dialed struct {
		c     *Conn
		err   error
		panic any // a panic in the dial, with its stack, raised again here
	}
	ch := make(chan dialed, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				ch <- dialed{panic: fmt.Sprintf("%v\n%s", v, debug.Stack())}
			}
		}()
		c, err := p.dialConn(ctx)
		ch <- dialed{c: c, err: err}
	}()
	d := <-ch
	if d.panic != nil {
		panic(d.panic)
	}
	c, err = d.c, d.err
	if err != nil {
		return nil, err
	}
	c.out = true
	return c, nil
}

// Put returns c after a complete HTTP/1 response: it becomes idle, its
// deadlines cleared, Uses counted. If the pool is closed or over its cap, c
// is closed with an RST instead. Put of a connection not handed out by Get
// (or already Put or Released) does nothing.
func (p *Pool) Put(c *Conn) {
	if c == nil {
		return
	}
	c.prepare()
	if c.TCPConn != nil {
		_ = c.SetDeadline(time.Time{})
	}
	p.mu.Lock()
	if !c.out {
		p.mu.Unlock()
		p.log.Error("put of a connection the pool did not hand out")
		return
	}
	c.out = false
	c.Uses++
	p.stats.InUse--
	if p.closed || p.overCapLocked() {
		p.stats.Evicted++
		p.signalLocked()
		p.mu.Unlock()
		_ = closeReset(c)
		return
	}
	p.pushIdleLocked(c, time.Now())
	p.mu.Unlock()
}

// Release frees c's slot: the caller closed (or will close) c itself, by the
// back leg's close policy. The socket is not touched.
func (p *Pool) Release(c *Conn) {
	if c == nil {
		return
	}
	p.mu.Lock()
	if !c.out {
		p.mu.Unlock()
		p.log.Error("release of a connection the pool did not hand out")
		return
	}
	c.out = false
	p.stats.InUse--
	p.signalLocked()
	p.mu.Unlock()
	p.wakeRefiller()
}

// Discard closes c with an RST, for a connection that failed before it
// carried anything worth a FIN, and frees its slot.
func (p *Pool) Discard(c *Conn) {
	if c == nil {
		return
	}
	_ = closeReset(c)
	p.Release(c)
}

// evict closes c, taken from the idle list by Get, with an RST and frees its
// slot.
func (p *Pool) evict(c *Conn, reason string) {
	_ = closeReset(c)
	p.mu.Lock()
	c.out = false
	p.stats.InUse--
	p.countEvictedLocked(reason)
	p.signalLocked()
	p.mu.Unlock()
	p.logEvicted(c, reason)
}

// noteSpeaksFirst takes what a liveness check found on an idle
// connection used uses times: bytes on one never used are a greeting, and
// a backend that sends first gets no more warm dials: its greeting, taken
// while the connection waited, would be stale or out of step by the time
// a session came (a server's handshake timeout runs meanwhile), so
// sessions dial their own, each getting its greeting fresh. Said once, at
// warn: pool.warm is then spent for nothing.
func (p *Pool) noteSpeaksFirst(l liveness, uses int) {
	if l != unexpectedData || uses > 0 || p.speaksFirst.Swap(true) {
		return
	}
	p.log.Warn("backend sends first (a greeting on a warm connection): warm connections are no longer dialed; sessions dial their own",
		zap.Int("warm", p.cfg.Warm))
}

func (p *Pool) countEvictedLocked(reason string) {
	p.stats.Evicted++
	if reason != "max_idle_age" && reason != "shutdown" {
		p.stats.Dead++
	}
}

func (p *Pool) logEvicted(c *Conn, reason string) {
	if ce := p.log.Check(zap.DebugLevel, "evicted idle backend connection"); ce != nil {
		ce.Write(zap.String("reason", reason), zap.Int("uses", c.Uses),
			zap.Duration("age", time.Since(c.born)))
	}
}

// homeLook is how many of the newest idle connections popIdleLocked
// looks through for one homed on the caller's loop: the newest are the
// most likely alive, and the look is bounded. One taken from another
// loop costs two epoll_ctl (that loop lets it go, the caller's takes it
// on): on two loops under ab -c 20, an http1 short connection made
// 1.58 epoll_ctl with a look of 4, 1.20 with 16.
const homeLook = 16

// popIdleLocked takes the newest idle connection, or among the newest
// homeLook the newest whose Bare.Home is home (when home ≥ 0).
func (p *Pool) popIdleLocked(home int) *Conn {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	i := n - 1
	if home >= 0 {
		for j := n - 1; j >= max(0, n-homeLook); j-- {
			if b := p.idle[j].Bare; b != nil && b.Home == home {
				i = j
				break
			}
		}
	}
	c := p.idle[i]
	copy(p.idle[i:], p.idle[i+1:])
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	c.out = true
	p.stats.InUse++
	if n-1+p.stats.Dialing < p.cfg.Warm {
		p.wakeRefiller()
	}
	return c
}

func (p *Pool) pushIdleLocked(c *Conn, now time.Time) {
	c.idleSince = now
	p.idle = append(p.idle, c)
	p.signalLocked()
}

// Wanted reports that a Get waits at MaxConns for a slot: a session
// that keeps a connection between its requests, for its client's next
// one, gives it back now instead. One atomic load.
func (p *Pool) Wanted() bool { return p.waiting.Load() > 0 }

// openLocked counts the connections held against MaxConns.
func (p *Pool) openLocked() int {
	return p.stats.InUse + len(p.idle) + p.stats.Dialing
}

func (p *Pool) roomLocked() bool {
	return p.cfg.MaxConns <= 0 || p.openLocked() < p.cfg.MaxConns
}

// overCapLocked reports whether one more idle connection would exceed
// MaxConns.
func (p *Pool) overCapLocked() bool {
	return p.cfg.MaxConns > 0 && p.openLocked() >= p.cfg.MaxConns
}

// signalLocked wakes the Gets waiting for a slot, if any.
func (p *Pool) signalLocked() {
	if p.stats.Waiting > 0 {
		close(p.freed)
		p.freed = make(chan struct{})
	}
}

// waitLocked waits, unlocked, until a slot may have come free. It fails with
// ErrPoolExhausted once ctx or ConnectTimeout (counted from start) ends.
func (p *Pool) waitLocked(ctx context.Context, start time.Time) error {
	freed := p.freed
	p.stats.Waiting++
	p.waiting.Add(1)
	p.mu.Unlock()
	if f, ok := ctx.Value(waitingKey{}).(func()); ok {
		f()
	}
	err := waitFreed(ctx, freed, p.cfg.ConnectTimeout, start)
	p.mu.Lock()
	p.stats.Waiting--
	p.waiting.Add(-1)
	if err != nil {
		return fmt.Errorf("backend %s: %d connections open: %w", p.cfg.Address, p.openLocked(), err)
	}
	return nil
}

type waitingKey struct{}

// OnWait returns ctx carrying f, which Get calls each time it starts to
// wait for a slot at MaxConns, before the wait, without the pool's lock:
// the caller can then watch for what should cut the wait short (its
// client gone) and cancel ctx. Nothing is called on Get's other ways.
func OnWait(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, waitingKey{}, f)
}

func waitFreed(ctx context.Context, freed <-chan struct{}, timeout time.Duration, start time.Time) error {
	var expired <-chan time.Time
	if timeout > 0 {
		left := timeout - time.Since(start)
		if left <= 0 {
			return ErrPoolExhausted
		}
		t := time.NewTimer(left)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-freed:
		return nil
	case <-expired:
		return ErrPoolExhausted
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrPoolExhausted, ctx.Err())
	}
}

// wakeRefiller tells Run's refiller to look at the warm count again.
func (p *Pool) wakeRefiller() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
