package balance

import (
	"sync"
	"time"
)

// HealthConfig is the state machine's thresholds.
type HealthConfig struct {
	Rise       int           // consecutive passed checks that bring a down server up
	Fall       int           // consecutive failed checks that take an up server down
	EjectAfter int           // consecutive passive failures that take it down; 0: never
	EaseIn     time.Duration // from a tenth to the full weight after coming back; 0: at once
	// Revive brings an ejected server back after this long without a
	// check: for servers no active check runs on. 0: only checks do.
	Revive time.Duration
	// Revived, if set, is called as Revive brings the server back (under
	// the Health's lock: it must not call back into it).
	Revived func()
}

// Health is one server's up/down state, fed by active checks and by what
// sessions see. A server starts up, at its full weight. Its methods are
// safe for concurrent use.
type Health struct {
	cfg HealthConfig

	mu        sync.Mutex
	up        bool
	passed    int       // consecutive passed checks
	failed    int       // consecutive failed checks
	passive   int       // consecutive passive failures
	since     time.Time // when it last changed state; zero: up from the start
	ejections Ejections
}

// Ejections counts a server's up → down transitions by cause.
type Ejections struct {
	Check   uint64 // fall failed checks in a row
	Passive uint64 // eject_after dial failures or resets in a row
}

// State is a snapshot of a server's health.
type State struct {
	Up        bool
	Since     time.Time // when it last changed state; zero: up from the start
	Ejections Ejections
}

// NewHealth returns a server that is up.
func NewHealth(cfg HealthConfig) *Health {
	cfg.Rise, cfg.Fall = max(cfg.Rise, 1), max(cfg.Fall, 1)
	return &Health{cfg: cfg, up: true}
}

// Checked records an active check's result at now and reports whether the
// server changed state.
func (h *Health) Checked(ok bool, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reviveLocked(now)
	if ok {
		// A passed check leaves the passive count: a server that accepts
		// (what a tcp check asks) may still reset every session.
		h.passed, h.failed = h.passed+1, 0
		if !h.up && h.passed >= h.cfg.Rise {
			h.setLocked(true, now)
			return true
		}
		return false
	}
	h.failed, h.passed = h.failed+1, 0
	if h.up && h.failed >= h.cfg.Fall {
		h.ejections.Check++
		h.setLocked(false, now)
		return true
	}
	return false
}

// Passive records what a session saw: ok after a session the server
// served, not ok after a failed dial or a reset from the server. It reports whether the
// server was taken down.
func (h *Health) Passive(ok bool, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reviveLocked(now)
	if ok {
		h.passive = 0
		return false
	}
	h.passive++
	if h.up && h.cfg.EjectAfter > 0 && h.passive >= h.cfg.EjectAfter {
		h.ejections.Passive++
		h.setLocked(false, now)
		return true
	}
	return false
}

func (h *Health) setLocked(up bool, now time.Time) {
	h.up, h.since = up, now
	h.passed, h.failed, h.passive = 0, 0, 0
}

// reviveLocked brings back, at now, a server down for Revive.
func (h *Health) reviveLocked(now time.Time) {
	if !h.up && h.cfg.Revive > 0 && now.Sub(h.since) >= h.cfg.Revive {
		h.setLocked(true, now)
		if h.cfg.Revived != nil {
			h.cfg.Revived()
		}
	}
}

// Up reports whether the server takes new sessions at now.
func (h *Health) Up(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reviveLocked(now)
	return h.up
}

// Weight is weight eased in at now: a server that came back starts at a
// tenth of it and grows linearly to all of it over EaseIn.
func (h *Health) Weight(weight int, now time.Time) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := float64(weight)
	if !h.up || h.since.IsZero() || h.cfg.EaseIn <= 0 {
		return w
	}
	f := float64(now.Sub(h.since)) / float64(h.cfg.EaseIn)
	if f >= 1 {
		return w
	}
	return w * (0.1 + 0.9*max(f, 0))
}

// Ejections returns the ejection counts alone, bringing back no server:
// for a retired backend's servers, which take no session and whose
// return nobody should hear of.
func (h *Health) Ejections() Ejections {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ejections
}

// State returns a snapshot.
func (h *Health) State(now time.Time) State {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reviveLocked(now)
	return State{Up: h.up, Since: h.since, Ejections: h.ejections}
}
