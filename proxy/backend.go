package proxy

import (
	"context"
	"net/netip"
	"reflect"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/balance"
	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
)

// backend is a configured backend: its servers, each with its own pool and
// health, and the balancer that picks among them. Reload replaces a backend
// whose settings changed; the old one is retired: its health checks and
// warm dials stop at once, its pools serve the sessions still using it
// until the last one ends.
type backend struct {
	cfg     config.Backend
	servers []*server
	bal     *balance.Balancer
	// users is the configuration's hold on it (1 until it retires) and
	// one per session using it (use, done): at 0 no session can use it
	// any more, unused is closed and its pools stop.
	users      atomic.Int64
	unused     chan struct{}
	stop       context.CancelFunc
	stopChecks context.CancelFunc
	// retiring: retireLocked ran (a reload replaced it, or the server
	// drains): its http1 sessions end after their exchange in flight.
	retiring atomic.Bool
	retired  atomic.Bool // no session uses it and its pools were told to stop
}

// server is one of a backend's servers.
type server struct {
	addr   string
	weight int
	pool   *pool.Pool
	health *balance.Health
	// active counts sessions using it now, least_conn's figure: one
	// count per backend name and address for the process's life
	// (Server.actives), so that sessions still on a backend a reload
	// replaced, or on a server a reload took out and a later one put
	// back, count.
	active *atomic.Int64
}

// buildBackends makes the backends of cfg, reusing those of old whose
// settings are unchanged. A changed backend gets new pools for all its
// servers, which start up.
func (s *Server) buildBackends(cfg *config.Config, old map[string]*backend) map[string]*backend {
	out := make(map[string]*backend, len(cfg.Backends))
	for _, b := range cfg.Backends {
		if !cfg.InUse(b.Name) {
			continue // no session can reach it: no pool, no checks
		}
		if prev := old[b.Name]; prev != nil && reflect.DeepEqual(prev.cfg, b) {
			out[b.Name] = prev
			continue
		}
		out[b.Name] = s.newBackend(b)
	}
	return out
}

// newBackend makes b's backend, its servers' session counts those of the
// same name and address before it. The caller holds s.mu, or is New.
func (s *Server) newBackend(b config.Backend) *backend {
	be := &backend{cfg: b, bal: balance.New(balance.Algorithm(b.Balance)), unused: make(chan struct{})}
	be.users.Store(1) // the configuration's
	hc := balance.HealthConfig{Rise: b.Health.Rise, Fall: b.Health.Fall, EjectAfter: b.Health.EjectAfter, EaseIn: b.Health.EaseIn}
	if !checked(b.Health) {
		hc.Revive = b.Health.Interval // nothing else would bring an ejected server back
	}
	warm := b.Pool.Warm
	if b.Source == config.SourceClient {
		warm = 0 // a warm connection would come from no client's address
	}
	for _, srv := range b.ServerList() {
		hc := hc
		if hc.Revive > 0 {
			log := s.log.With(zap.String("backend", b.Name), zap.String("server", srv.Address))
			hc.Revived = func() {
				log.Info("server back: taking sessions again, health.interval after its ejection", zap.Duration("interval", hc.Revive))
			}
		}
		sv := &server{addr: srv.Address, weight: max(srv.Weight, 1), health: balance.NewHealth(hc), active: s.activeCount(b.Name, srv.Address)}
		sv.pool = pool.New(pool.Config{
			Address: srv.Address, ConnectTimeout: b.ConnectTimeout,
			Warm: warm, MaxIdleAge: b.Pool.MaxIdleAge, MaxConns: b.Pool.MaxConns,
			DialBare: s.bareDialer(b, sv),
		}, s.dialer(b, sv), s.log.With(zap.String("backend", b.Name), zap.String("server", srv.Address)))
		be.servers = append(be.servers, sv)
	}
	return be
}

// activeCount is the session count of backend name's server at addr,
// made at its first use. The caller holds s.mu, or is New.
func (s *Server) activeCount(name, addr string) *atomic.Int64 {
	k := serverKey{name, addr}
	c := s.actives[k]
	if c == nil {
		if s.actives == nil {
			s.actives = map[serverKey]*atomic.Int64{}
		}
		c = new(atomic.Int64)
		s.actives[k] = c
	}
	return c
}

// serverKey names a server across reloads: its backend's name, its address.
type serverKey struct{ backend, addr string }

// checked reports whether h runs an active check; a Config built in code
// may leave Health zero: no check.
func checked(h config.Health) bool {
	return (h.Check == config.HealthTCP || h.Check == config.HealthHTTP) && h.Interval > 0 && h.Timeout > 0
}

// order returns the servers in the order a session tries them for client.
func (b *backend) order(client netip.Addr) []*server {
	if len(b.servers) == 1 {
		return b.servers
	}
	now := time.Now()
	cands := make([]balance.Candidate, len(b.servers))
	for i, sv := range b.servers {
		cands[i] = balance.Candidate{Key: sv.addr, Weight: sv.health.Weight(sv.weight, now),
			Active: sv.active.Load(), Up: sv.health.Up(now)}
	}
	idx := b.bal.Order(cands, client)
	out := make([]*server, len(idx))
	for i, j := range idx {
		out[i] = b.servers[j]
	}
	return out
}

// runPoolLocked starts b's pools and health checks (once).
func (s *Server) runPoolLocked(b *backend) {
	if b.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	checks, stopChecks := context.WithCancel(ctx)
	b.stop, b.stopChecks = cancel, stopChecks
	for _, sv := range b.servers {
		s.pools.Add(1)
		go func() { defer s.pools.Done(); sv.pool.Run(ctx) }()
		if checked(b.cfg.Health) {
			s.pools.Add(1)
			go func() { defer s.pools.Done(); s.checkLoop(checks, b, sv) }()
		}
	}
}

// retireLocked stops b's checks and warm dials and closes its idle
// connections now (b left the configuration, or the server drains:
// nothing new should reach its servers), and its pools once no session
// uses it any more. Once per backend.
func (s *Server) retireLocked(b *backend) {
	if b.retiring.Swap(true) {
		return
	}
	if b.stopChecks != nil {
		b.stopChecks()
	}
	for _, sv := range b.servers {
		sv.pool.Retire()
	}
	b.done() // the configuration's hold
	s.pools.Add(1)
	go func() {
		defer s.pools.Done()
		<-b.unused
		if b.stop != nil {
			b.stop()
		}
		b.retired.Store(true)
	}()
}

// use counts a session in, unless b is unused for good (retired, and
// every session that used it ended: its pools stop): a connection
// accepted with the listener's configuration of before a reload then
// takes the new one's backend (Server.useBackend). A compare-and-swap,
// so that no session counts in once the count reached 0, as a
// WaitGroup's Add racing its Wait could.
func (b *backend) use() bool {
	for n := b.users.Load(); n > 0; n = b.users.Load() {
		if b.users.CompareAndSwap(n, n+1) {
			return true
		}
	}
	return false
}

// done counts a session, or the configuration's hold, out.
func (b *backend) done() {
	if b.users.Add(-1) == 0 {
		close(b.unused)
	}
}

// stats sums the pools of b's servers.
func (b *backend) stats() pool.Stats {
	var sum pool.Stats
	for _, sv := range b.servers {
		addStats(&sum, sv.pool.Stats())
	}
	return sum
}

// addStats adds st to sum: gauges and counters add up, Failing is the
// worst.
func addStats(sum *pool.Stats, st pool.Stats) {
	sum.Idle += st.Idle
	sum.InUse += st.InUse
	sum.Dialing += st.Dialing
	sum.Waiting += st.Waiting
	sum.Failing = max(sum.Failing, st.Failing)
	sum.Dialed += st.Dialed
	sum.DialFailures += st.DialFailures
	sum.LocalDialFailures += st.LocalDialFailures
	sum.Evicted += st.Evicted
	sum.Dead += st.Dead
	sum.Pooled += st.Pooled
	sum.Reused += st.Reused
}

// ServerStatus is one server's state, for metrics and /readyz.
type ServerStatus struct {
	Address   string
	Weight    float64 // eased in
	Active    int64   // sessions using it
	Checked   bool    // an active health check runs on it
	Health    balance.State
	PoolStats pool.Stats
}

// Servers returns each current backend's servers, by backend name, in
// configuration order. A server's ejections count those of the same
// address in backends a reload replaced under the same name: the count
// is a counter, it never goes back.
func (s *Server) Servers() map[string][]ServerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make(map[string][]ServerStatus, len(s.backends))
	s.replaced.fold()
	for name, b := range s.backends {
		for _, sv := range b.servers {
			h := sv.health.State(now)
			h.Ejections = addEjections(h.Ejections, s.replaced.ejectionsOf(name, sv.addr))
			out[name] = append(out[name], ServerStatus{
				Address: sv.addr, Weight: sv.health.Weight(sv.weight, now), Active: sv.active.Load(),
				Checked: checked(b.cfg.Health), Health: h, PoolStats: sv.pool.Stats(),
			})
		}
	}
	return out
}
