package pool

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Run keeps Warm idle connections ready (up to maxRefillers dialing at once,
// retrying failed dials with backoff and jitter) and evicts aged and dead idle
// connections on a ticker. When ctx ends it waits for its goroutines, closes
// every idle connection with an RST and returns; the pool is then closed: Get
// fails with ErrPoolClosed and Put resets what it is given. Call Run once.
func (p *Pool) Run(ctx context.Context) {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		p.log.Error("pool Run called twice")
		return
	}
	p.running = true
	p.mu.Unlock()

	var wg sync.WaitGroup
	for range min(p.cfg.Warm, maxRefillers) {
		wg.Go(func() { p.refill(ctx) })
	}
	p.evictLoop(ctx)
	wg.Wait()
	p.shutdown()
}

// maxRefillers bounds the warm dials in flight at once. One refiller,
// dialing one connection at a time, falls behind a few thousand accepts a
// second, and each session it misses dials for itself.
const maxRefillers = 4

// refill dials warm connections, one at a time on each refiller, while
// fewer than Warm are idle or being dialed and the cap allows. While dials
// fail, one refiller (the one whose failure began the streak) retries with
// backoff and the others wait: a failing backend sees one retry at a time,
// as with a single refiller.
func (p *Pool) refill(ctx context.Context) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	lead := false // this refiller retries the failing streak
	for {
		if !lead && p.failing.Load() || !p.reserveWarm() {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		c, err := p.dialConn(ctx)
		if err == nil {
			p.addWarm(c)
			if lead {
				lead = false
				p.failing.Store(false)
				p.log.Info("backend dial recovered")
			}
			continue
		}
		p.unreserveWarm()
		if ctx.Err() != nil {
			return
		}
		if !lead && !p.failing.CompareAndSwap(false, true) {
			continue // another refiller leads the retries
		}
		p.logFailing(err, !lead)
		if !lead { // a streak begins: an earlier one's news is stale
			select {
			case <-p.recovered:
			default:
			}
		}
		lead = true
		retry.Reset(p.retryDelay(err))
		// A session's dial that succeeded says the backend is back, not
		// that this host has ports or descriptors to spare: after a local
		// failure the backoff runs out, and the sessions, which dial for
		// themselves meanwhile, get what frees up first.
		recovered := p.recovered
		if IsLocal(err) {
			recovered = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		case <-recovered: // a session's dial succeeded: retry now
			retry.Stop() // Go 1.23 timers: nothing stale is left to drain
		}
	}
}

func (p *Pool) reserveWarm() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Gets waiting at the cap come first: the slot they wait for is theirs.
	if p.closed || p.stats.Waiting > 0 || len(p.idle)+p.stats.Dialing >= p.cfg.Warm || !p.roomLocked() || p.speaksFirst.Load() || p.retired.Load() {
		return false
	}
	p.stats.Dialing++
	if len(p.idle)+p.stats.Dialing < p.cfg.Warm {
		p.wakeRefiller() // more to dial: another refiller dials beside this one
	}
	return true
}

func (p *Pool) unreserveWarm() {
	p.mu.Lock()
	p.stats.Dialing--
	p.signalLocked()
	p.mu.Unlock()
}

func (p *Pool) addWarm(c *Conn) {
	c.prepare()
	p.mu.Lock()
	p.stats.Dialing--
	if p.closed {
		p.stats.Evicted++
		p.mu.Unlock()
		_ = closeReset(c)
		return
	}
	p.pushIdleLocked(c, time.Now())
	p.mu.Unlock()
}

// logFailing logs the first failure of a streak at warn, the rest at debug.
func (p *Pool) logFailing(err error, first bool) {
	local := IsLocal(err)
	msg := "backend dial failing"
	if local {
		msg = "local dial error, not a backend failure"
	}
	lvl := zap.DebugLevel
	if first {
		lvl = zap.WarnLevel
	}
	if ce := p.log.Check(lvl, msg); ce != nil {
		ce.Write(zap.Error(err), zap.Bool("local", local))
	}
}

// shutdown closes the pool and every idle connection with an RST.
// Retire says the pool's backend left the configuration while sessions
// still use it: no warm connection is dialed any more and the idle ones
// are closed (with an RST, as at shutdown); those sessions still get
// connections (dialed for them) and give them back, until Run ends.
func (p *Pool) Retire() {
	p.retired.Store(true)
	p.closeIdle(false)
}

func (p *Pool) shutdown() { p.closeIdle(true) }

// closeIdle closes the idle connections by RST (they carry nothing), and
// the pool itself if closing.
func (p *Pool) closeIdle(closing bool) {
	p.mu.Lock()
	p.closed = p.closed || closing
	idle := p.idle
	p.idle = nil
	p.stats.Evicted += uint64(len(idle))
	p.signalLocked()
	p.mu.Unlock()
	for _, c := range idle {
		_ = closeReset(c)
	}
}
