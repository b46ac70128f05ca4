package pool

import (
	"context"
	"slices"
	"syscall"
	"time"
)

// sweepEvery is the evictor's period: a quarter of MaxIdleAge, between
// 100ms and maxSweepEvery.
func (p *Pool) sweepEvery() time.Duration {
	if p.cfg.MaxIdleAge <= 0 {
		return maxSweepEvery
	}
	return min(max(p.cfg.MaxIdleAge/4, 100*time.Millisecond), maxSweepEvery)
}

// maxSweepEvery bounds how long an idle connection the backend closed
// (its keep-alive timeout, a reload) sits in CLOSE-WAIT, counted idle,
// before the sweep's peek finds it: a peek per idle connection a second
// is next to nothing beside a descriptor and a backend slot held.
const maxSweepEvery = time.Second

func (p *Pool) evictLoop(ctx context.Context) {
	t := time.NewTicker(p.sweepEvery())
	defer t.Stop()
	var s sweeper
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep(p)
		}
	}
}

// sweeper is the evictor's scratch, reused from one sweep to the next.
type sweeper struct {
	probe prober
	gone  []*Conn   // removed from the idle list, to close
	snap  []idleRef // idle connections to check, outside the lock
}

// idleRef names an idle connection as the sweeper saw it: if Uses changed
// by the time the verdict comes, it was taken and returned meanwhile and the
// verdict is stale.
type idleRef struct {
	c    *Conn
	uses int
	raw  syscall.RawConn // c's, read under the lock: a Get may hand c out meanwhile, and its holder change it
	l    liveness        // the peek's verdict
}

// sweep evicts aged idle connections, then peeks at the others without
// holding the lock (Get may take one meanwhile: its own check decides) and
// evicts the dead that are still idle.
func (s *sweeper) sweep(p *Pool) {
	p.mu.Lock()
	s.gone = p.takeAgedLocked(time.Now(), s.gone[:0])
	for _, c := range p.idle {
		s.snap = append(s.snap, idleRef{c: c, uses: c.Uses, raw: c.raw})
	}
	p.mu.Unlock()
	p.closeGone(s.gone, "max_idle_age")

	s.gone = s.gone[:0]
	n := 0
	for _, r := range s.snap {
		if r.l = s.probe.check(r.raw); r.l != alive {
			s.snap[n] = r
			n++
		}
	}
	if n > 0 {
		p.mu.Lock()
		s.gone = p.takeDeadLocked(s.snap[:n], s.gone)
		p.mu.Unlock()
		// Only a verdict on a connection still idle and unused since
		// the snapshot tells of the backend: one a session took
		// meanwhile may carry its answer.
		for _, r := range s.snap[:n] {
			if slices.Contains(s.gone, r.c) {
				p.noteSpeaksFirst(r.l, r.uses)
			}
		}
		p.closeGone(s.gone, "dead")
	}
	clear(s.snap)
	s.snap = s.snap[:0]
	clear(s.gone)
}

// takeAgedLocked moves the idle connections older than MaxIdleAge into
// gone. The idle list is ordered by idleSince, so they are a prefix.
func (p *Pool) takeAgedLocked(now time.Time, gone []*Conn) []*Conn {
	if p.cfg.MaxIdleAge <= 0 {
		return gone
	}
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleSince) > p.cfg.MaxIdleAge {
		i++
	}
	gone = append(gone, p.idle[:i]...)
	p.idle = slices.Delete(p.idle, 0, i)
	return gone
}

// takeDeadLocked moves the connections in dead that are still idle and
// unchanged since the snapshot into gone.
func (p *Pool) takeDeadLocked(dead []idleRef, gone []*Conn) []*Conn {
	for _, r := range dead {
		i := slices.Index(p.idle, r.c)
		if i >= 0 && r.c.Uses == r.uses {
			gone = append(gone, r.c)
			p.idle = slices.Delete(p.idle, i, i+1)
		}
	}
	return gone
}

// closeGone counts connections already removed from the idle list, then
// resets them.
func (p *Pool) closeGone(gone []*Conn, reason string) {
	if len(gone) == 0 {
		return
	}
	p.mu.Lock()
	for range gone {
		p.countEvictedLocked(reason)
	}
	p.signalLocked()
	p.mu.Unlock()
	for _, c := range gone {
		_ = closeReset(c)
		p.logEvicted(c, reason)
	}
	p.wakeRefiller()
}
