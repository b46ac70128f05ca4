package engine

import (
	"net"
	"sync"
	"time"
)

// Stall says why a Guard interrupted an exchange.
type Stall int

const (
	NotStalled   Stall = iota
	StalledIdle        // no byte moved on any of its connections for the idle time
	StalledDrain       // shutdown ran out of time
)

// Guard bounds a blocking exchange (http1: a request and its response)
// that the relay's timers do not see: when no byte moves on any of its
// connections for idle, or when its owner calls Drain, it sets every
// connection's deadline to now, so that blocked reads and writes return
// at once. It looks every idle/4 at kernel counts (TCP_INFO), so the
// data path is never touched; a look runs on a timer, no goroutine
// waits. The counts are first read at the first look, counted as
// progress: an exchange that ends sooner (most do) reads none, and
// silence is still never cut short of idle (at most idle/4 later than
// with a reading at the start).
type Guard struct {
	mu       sync.Mutex
	idle     time.Duration
	conns    [2]*net.TCPConn
	infos    [2]infoReader
	timer    *time.Timer
	first    bool // no look yet: mark holds nothing
	mark     uint64
	quiet    time.Time
	why      Stall
	finished bool
}

// NewGuard starts guarding conns (at most two). It watches no context:
// the owner's own watcher calls Drain (one per session costs less than
// one per exchange).
func NewGuard(idle time.Duration, conns ...*net.TCPConn) *Guard {
	g := new(Guard)
	g.Restart(idle, conns...)
	return g
}

// Restart guards conns (at most two) for a new exchange, as NewGuard
// does, on a guard that is new or stopped: its timer is reused, so a
// session's exchanges allocate no guard each.
func (g *Guard) Restart(idle time.Duration, conns ...*net.TCPConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.idle, g.conns, g.infos = idle, [2]*net.TCPConn{}, [2]infoReader{}
	copy(g.conns[:], conns)
	g.first, g.mark, g.quiet, g.why, g.finished = true, 0, time.Now(), NotStalled, false
	switch {
	case idle <= 0:
	case g.timer == nil:
		g.timer = time.AfterFunc(tick(idle), g.look)
	default:
		g.timer.Reset(tick(idle))
	}
}

// Swap has the guard watch c in place of old: an exchange moved to
// another connection before any of it went. A guard that interrupted the
// exchange already interrupts c too.
func (g *Guard) Swap(old, c *net.TCPConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.conns {
		if g.conns[i] != old {
			continue
		}
		g.conns[i], g.infos[i] = c, infoReader{}
		if g.why != NotStalled {
			_ = c.SetDeadline(time.Now())
		}
	}
}

// Drain interrupts the exchange because shutdown ran out of time
// (StalledDrain), unless it is over or was interrupted already.
func (g *Guard) Drain() { g.fire(StalledDrain) }

// progress reads the counts of the exchange's connections, under mu
// (a reading takes a few microseconds, and only a look makes them).
func (g *Guard) progress() uint64 {
	var p uint64
	for i, c := range g.conns {
		if c != nil {
			p += g.infos[i].read(c).progress()
		}
	}
	return p
}

// look is the timer's: it notes progress, or interrupts the exchange
// once none was made for idle. All of it under mu, so that a look the
// timer began just before Stop does nothing to the exchange a Restart
// then began (its only mark on one it meets: an early first reading).
func (g *Guard) look() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.finished || g.why != NotStalled {
		return
	}
	p, now := g.progress(), time.Now()
	if g.first || p != g.mark {
		g.mark, g.quiet, g.first = p, now, false
	}
	if now.Sub(g.quiet) < g.idle {
		g.timer.Reset(tick(g.idle))
		return
	}
	g.interrupt(StalledIdle)
}

func (g *Guard) fire(why Stall) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.interrupt(why)
}

// interrupt sets every connection's deadline to now, unless the exchange
// is over or was interrupted already. Under mu.
func (g *Guard) interrupt(why Stall) {
	if g.finished || g.why != NotStalled {
		return
	}
	g.why = why
	for _, c := range g.conns {
		if c != nil {
			_ = c.SetDeadline(time.Now())
		}
	}
}

// Stalled says whether, and why, the guard interrupted the exchange so
// far: a caller seeing an error checks it before blaming a peer.
func (g *Guard) Stalled() Stall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.why
}

// Stop ends the guard and says whether, and why, it interrupted the
// exchange. After an interruption the connections' deadlines are in the
// past: the caller ends them.
func (g *Guard) Stop() Stall {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.finished = true
	if g.timer != nil {
		g.timer.Stop()
	}
	return g.why
}
