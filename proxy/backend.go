package proxy

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
)

// backend is a configured backend and its pool. Reload replaces a backend
// whose settings changed; the old one is retired: its pool runs until the
// last session using it ends.
type backend struct {
	cfg   config.Backend
	pool  *pool.Pool
	users sync.WaitGroup // sessions using it
	stop  context.CancelFunc
}

// buildBackends makes the backends of cfg, reusing those of old whose
// settings are unchanged.
func (s *Server) buildBackends(cfg *config.Config, old map[string]*backend) map[string]*backend {
	out := make(map[string]*backend, len(cfg.Backends))
	for _, b := range cfg.Backends {
		if prev := old[b.Name]; prev != nil && prev.cfg == b {
			out[b.Name] = prev
			continue
		}
		warm := b.Pool.Warm
		if b.Source == config.SourceClient {
			warm = 0 // a warm connection would come from no client's address
		}
		out[b.Name] = &backend{cfg: b, pool: pool.New(pool.Config{
			Address: b.Address, ConnectTimeout: b.ConnectTimeout,
			Warm: warm, MaxIdleAge: b.Pool.MaxIdleAge, MaxConns: b.Pool.MaxConns,
		}, s.dialer(b), s.log.With(zap.String("backend", b.Name)))}
	}
	return out
}

// runPoolLocked starts b's pool (once).
func (s *Server) runPoolLocked(b *backend) {
	if b.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	s.pools.Add(1)
	go func() { defer s.pools.Done(); b.pool.Run(ctx) }()
}

// retireLocked stops b's pool once no session uses it any more.
func (s *Server) retireLocked(b *backend) {
	s.pools.Add(1)
	go func() {
		defer s.pools.Done()
		b.users.Wait()
		if b.stop != nil {
			b.stop()
		}
	}()
}
