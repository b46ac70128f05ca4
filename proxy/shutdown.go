package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/engine"
)

// Shutdown drains (see Drain), lets live sessions finish until ctx ends, then
// ends the rest by their close policies. Sessions still open after the
// longest grace and drain of any leg (a peer that keeps sending while the
// proxy withholds its FIN) are reset (outcome drained), so Shutdown always
// returns. It returns nil: every session got its record.
//
// Shutdown may be called more than once, from several goroutines: the
// first call runs the sequence under its ctx; the others wait for it to
// end.
func (s *Server) Shutdown(ctx context.Context) error {
	first := false
	s.shutOnce.Do(func() { first = true })
	if !first {
		<-s.shutDone
		return nil
	}
	defer close(s.shutDone)
	s.Drain()
	s.closeListeners()
	defer s.stopPools()
	defer s.closeLoops() // every return below comes after the last session ended
	defer s.stopHTTP1Idle()
	done := s.drained
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	// Counted before drainNow starts the cut: a count taken beside it
	// raced the sessions it ends (one of three cut, said a log). Sessions
	// that ended and wait for the records sink are not cut.
	if open := s.live.Load() - s.writing.Load(); errors.Is(ctx.Err(), context.DeadlineExceeded) && open > 0 {
		s.log.Info("shutdown_timeout ran out: the sessions left are cut", zap.Int64("sessions", open))
	}
	s.drainNow()
	bound := s.policyBound()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}
	if open := s.live.Load() - s.writing.Load(); open > 0 {
		s.log.Warn("sessions still open after ending by policy were reset", zap.Int64("sessions", open), zap.Duration("waited", bound))
	}
	if w := s.writing.Load(); w > 0 {
		s.log.Warn("ended sessions wait to write their records: the records sink takes nothing", zap.Int64("sessions", w))
	}
	close(s.kill)
	<-done
	return nil
}

// ShutdownBound is the longest Shutdown takes past its context's end
// while the records sink takes what it is given: ending by policy
// (policyBound), then a reset of what is left.
func (s *Server) ShutdownBound() time.Duration { return s.policyBound() + time.Second }

// policyBound is how long ending by policy may take once shutdown_timeout
// ran out: what still flows is cut at once; a leg still waiting for its
// peer gets engine.DrainGrace; a safe reset waits up to drain_timeout for
// its queue, then sends a FIN whose wait is DrainGrace again. A second on
// top; then whatever is left is reset.
func (s *Server) policyBound() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var longest time.Duration
	for _, l := range s.cfg.Listeners {
		longest = max(longest, l.Close.DrainTimeout, s.backends[l.Backend].cfg.Close.DrainTimeout)
	}
	return 2*engine.DrainGrace + longest + time.Second
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	for _, l := range s.listeners {
		s.closeLocked(l)
	}
}

// closeLoops stops the relay loops, if Serve started any, once no session
// is left on them.
func (s *Server) closeLoops() {
	if ls := s.loops.Load(); ls != nil {
		ls.Close()
	}
}

// stopHTTP1Idle ends what Serve started for http1 sessions between
// requests, once no session is left: the parker's goroutine and the
// server's two watchers of draining and shutdown.
func (s *Server) stopHTTP1Idle() {
	if p := s.parker.Load(); p != nil {
		p.Close()
	}
	s.mu.Lock()
	stop := s.stopH1
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// stopPools closes the idle backend connections (by RST: they carry
// nothing) once no session uses them, and waits for every pool.
func (s *Server) stopPools() {
	s.mu.Lock()
	for _, b := range s.backends {
		s.retireLocked(b)
	}
	if s.autoStop != nil {
		s.autoStop()
	}
	s.mu.Unlock()
	s.pools.Wait()
	s.auto.waitLogged()
}

// sampler decides whether a record is logged.
type sampler func(*engine.Teardown) bool

// teardownSampler reads log.teardown: all | errors | sample:<rate>. Records
// whose outcome is not ok are always kept.
func teardownSampler(mode string) (sampler, error) {
	switch {
	case mode == "" || mode == "all":
		return func(*engine.Teardown) bool { return true }, nil
	case mode == "errors":
		return func(t *engine.Teardown) bool { return t.Outcome != engine.OutcomeOK }, nil
	case strings.HasPrefix(mode, "sample:"):
		rate, err := strconv.ParseFloat(strings.TrimPrefix(mode, "sample:"), 64)
		if err != nil || rate <= 0 || rate > 1 {
			return nil, fmt.Errorf("log.teardown: %q: rate must be in (0, 1]", mode)
		}
		return func(t *engine.Teardown) bool { return t.Outcome != engine.OutcomeOK || rand.Float64() < rate }, nil
	}
	return nil, fmt.Errorf("log.teardown: %q is not one of all, errors, sample:<rate>", mode)
}
