package proxy

import (
	"context"
	"errors"

	"github.com/closeproxy/closeproxy/config"
)

// Reload swaps in cfg without dropping established sessions: listeners
// whose address is unchanged keep their socket and take the new settings
// for new connections; new addresses are bound; removed ones are closed;
// a backend whose settings changed gets a new pool and the old one runs
// until its last session ends. If a new address cannot be bound, nothing
// changes and the error says why. The server's own TIME-WAIT watcher, if
// it has one (no WithWatcher), follows; a shared one is the caller's to
// update. Reload logs nothing on success: the caller says the reload is
// done once everything it reloads has the new configuration.
func (s *Server) Reload(ctx context.Context, cfg *config.Config) error {
	if err := s.swap(ctx, cfg); err != nil {
		return err
	}
	if s.ownWatch {
		s.watch.Update(cfg) // resolves host names: outside the server's lock
	}
	return nil
}

// swap carries out Reload under the server's lock.
func (s *Server) swap(ctx context.Context, cfg *config.Config) error {
	smp, err := s.check(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining {
		return errors.New("reload: draining or shutting down")
	}
	lns, err := s.bindLocked(ctx, cfg, s.listeners)
	if err != nil {
		return err
	}
	old := s.backends
	s.backends = s.buildBackends(cfg, old)
	// The listeners take the new backends before the old ones retire: a
	// connection accepted meanwhile that finds its backend unused for
	// good finds the new one (useBackend).
	s.configureLocked(cfg, lns)
	for name, b := range old {
		if s.backends[name] != b {
			s.retireLocked(b)
			s.replaced.add(name, b)
		}
	}
	s.closeDroppedLocked(lns)
	for _, l := range lns {
		if s.serving && !s.isAcceptingLocked(l) {
			s.startAcceptLocked(l)
		}
	}
	s.listeners, s.cfg = lns, cfg
	s.sample.Store(&smp)
	if s.serving {
		for _, b := range s.backends {
			s.runPoolLocked(b)
		}
		s.startAutoLocked()
	}
	return nil
}

// closeDroppedLocked closes the listeners that are not in lns any more;
// their sessions go on.
func (s *Server) closeDroppedLocked(lns []*listener) {
	keep := map[*listener]bool{}
	for _, l := range lns {
		keep[l] = true
	}
	for _, l := range s.listeners {
		if !keep[l] {
			s.closeLocked(l)
		}
	}
}

func (s *Server) isAcceptingLocked(l *listener) bool {
	for _, cur := range s.listeners {
		if cur == l {
			return true
		}
	}
	return false
}
