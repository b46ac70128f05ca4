package proxy

import (
	"time"

	"github.com/closeproxy/closeproxy/engine"
)

// Observer receives what the proxy does, for metrics. Every method must be
// cheap, must not block and must be safe for concurrent use: they run on the
// accept loops and session goroutines. The admin package implements it; a
// nil Observer is allowed (nothing is observed).
type Observer interface {
	// Accepted: a connection was accepted on the listener.
	Accepted(listener string)
	// Rejected: a connection was reset at once for reason (over_limit).
	Rejected(listener, reason string)
	// Ended: a session ended, with its record, whether or not the record
	// is logged.
	Ended(td *engine.Teardown)
	// Dialed: a backend dial finished (d is its duration); err is nil on
	// success. Dials the pool makes in the background are included.
	Dialed(backend string, d time.Duration, err error)
	// AutoSwitched: time_wait = "auto" switched new closes to safe resets
	// (on) or back (off) for reason (policy.ReasonHostBudget, ReasonPorts).
	AutoSwitched(reason string, on bool)
}

// WithObserver sets the Observer.
func WithObserver(o Observer) Option {
	return func(s *Server) { s.obs = o }
}

type nopObserver struct{}

func (nopObserver) Accepted(string)                     {}
func (nopObserver) Rejected(string, string)             {}
func (nopObserver) Ended(*engine.Teardown)              {}
func (nopObserver) Dialed(string, time.Duration, error) {}
func (nopObserver) AutoSwitched(string, bool)           {}
