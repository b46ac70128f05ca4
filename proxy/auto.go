package proxy

import (
	"context"
	"github.com/closeproxy/closeproxy/engine"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
)

// autoWatch measures what time_wait = "auto" decides from and keeps its
// hysteresis. One goroutine samples, at most every auto.sample_interval
// (≥ 250 ms), this host's TIME-WAIT total (/proc/net/sockstat) and the
// proxy's TIME-WAIT toward each backend (sock_diag); between samples the
// TIME-WAITs the proxy placed itself are added, so a burst cannot overshoot
// the budget by a whole interval. Sessions only read the current state.
type autoWatch struct {
	cfg      policy.AutoConfig
	interval time.Duration
	log      *zap.Logger
	obs      Observer
	dests    func() []netip.AddrPort // backend addresses, current ones
	placed   atomic.Int64            // TIME-WAITs the proxy placed since the last sample
	sampled  atomic.Int64            // the host's TIME-WAIT at the last sample
	host     atomic.Bool             // host pressure on (hysteresis state)
	running  atomic.Bool             // the sampler runs: some leg uses auto

	mu        sync.Mutex
	ports     map[netip.AddrPort]bool // port pressure on, per backend address
	sampledTo map[netip.AddrPort]int  // the proxy's TIME-WAIT toward it at the last sample
	placedTo  map[netip.AddrPort]int  // placed toward it since
	portRange int
}

func newAutoWatch(c config.Auto, log *zap.Logger, obs Observer, dests func() []netip.AddrPort) *autoWatch {
	budget := c.TWBudget
	if budget == 0 {
		if max, err := procnet.ReadMaxTWBuckets(); err == nil && max > 0 {
			budget = max / 2
		} else {
			budget = 131072 / 2 // the kernel's usual default when it cannot be read
		}
	}
	return &autoWatch{
		cfg:      policy.AutoConfig{TWBudget: budget, TWResume: c.TWResume, PortShare: c.PortShare, PortResume: c.PortResume},
		interval: max(c.SampleInterval, 250*time.Millisecond),
		log:      log, obs: obs, dests: dests, ports: map[netip.AddrPort]bool{},
		sampledTo: map[netip.AddrPort]int{}, placedTo: map[netip.AddrPort]int{},
	}
}

// run samples every interval until ctx ends.
func (a *autoWatch) run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sample()
		}
	}
}

func (a *autoWatch) sample() {
	tw, err := procnet.ReadTimeWait()
	if err != nil {
		return // no figure, no pressure
	}
	a.sampled.Store(int64(tw))
	a.placed.Store(0)
	a.watchHost(tw)
	perDest, portRange, err := timeWaitToward(a.dests())
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.portRange = portRange
	clear(a.placedTo)
	for dest, n := range perDest {
		a.sampledTo[dest] = n
		prev := policy.AutoState{PortSaving: a.ports[dest]}
		next := policy.Watch(a.cfg, policy.Figures{HostTW: -1 << 31, DestTW: n, PortRange: portRange}, prev)
		if next.PortSaving != prev.PortSaving {
			a.switched(policy.ReasonPorts, next.PortSaving, zap.Stringer("backend", dest), zap.Int("time_wait", n))
		}
		a.ports[dest] = next.PortSaving
	}
}

// watchHost applies the host budget's hysteresis to an estimate.
func (a *autoWatch) watchHost(tw int) {
	prev := policy.AutoState{HostSaving: a.host.Load()}
	next := policy.Watch(a.cfg, policy.Figures{HostTW: tw}, prev)
	if next.HostSaving != prev.HostSaving && a.host.CompareAndSwap(prev.HostSaving, next.HostSaving) {
		a.switched(policy.ReasonHostBudget, next.HostSaving, zap.Int("time_wait", tw), zap.Int("budget", a.cfg.TWBudget))
	}
}

func (a *autoWatch) switched(reason string, on bool, fields ...zap.Field) {
	a.obs.AutoSwitched(reason, on)
	msg := "auto: pressure gone, closes back to the accepting side"
	if on {
		msg = "auto: pressure, new closes switch to safe resets"
	}
	a.log.Info(msg, append(fields, zap.String("reason", reason))...)
}

// countPlaced counts the TIME-WAITs a finished session left on the proxy, while
// some leg uses auto (without the sampler nothing would ever reset them).
func (a *autoWatch) countPlaced(td *engine.Teardown) {
	if !a.running.Load() {
		return
	}
	for _, l := range []*engine.LegRecord{&td.Front, &td.Back} {
		if proxyHolds(l.TimeWait) {
			a.placedTimeWait()
		}
	}
	if proxyHolds(td.Back.TimeWait) {
		a.placedToward(td.Back.Peer)
	}
}

// proxyHolds reports a TIME-WAIT the proxy may hold: its own, both sides'
// after crossed FINs, or one whose holder is unknown (counted, to err on
// the side of the budget).
func proxyHolds(s policy.Side) bool {
	return s == policy.SideProxy || s == policy.SideBoth || s == policy.SideUnknown
}

// placedTimeWait counts a TIME-WAIT the proxy just took, and re-checks the
// budget with it.
func (a *autoWatch) placedTimeWait() {
	est := a.sampled.Load() + a.placed.Add(1)
	if !a.host.Load() && est >= int64(a.cfg.TWBudget) {
		a.watchHost(int(est))
	}
}

// usesAuto reports whether any leg of cfg has time_wait = "auto".
func usesAuto(cfg *config.Config) bool {
	for _, l := range cfg.Listeners {
		if l.Close.TimeWait == policy.TargetAuto {
			return true
		}
	}
	for _, b := range cfg.Backends {
		if b.Close.TimeWait == policy.TargetAuto {
			return true
		}
	}
	return false
}

// startAutoLocked starts the sampler once some leg uses auto; it stops with
// the pools at shutdown.
func (s *Server) startAutoLocked() {
	if s.autoStop != nil || !usesAuto(s.cfg) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.autoStop = cancel
	s.auto.sample() // the first figures before the first session closes
	s.auto.running.Store(true)
	s.pools.Add(1)
	go func() { defer s.pools.Done(); s.auto.run(ctx) }()
}

// backendAddrs returns the current backends' addresses that are literal
// ip:port (a host name cannot be matched against sockets). It takes no
// lock: the sampler runs under the server's lock at start.
func (s *Server) backendAddrs() []netip.AddrPort {
	if p := s.dests.Load(); p != nil {
		return *p
	}
	return nil
}

// setDestsLocked records the current backends' servers' addresses for backendAddrs.
func (s *Server) setDestsLocked() {
	var out []netip.AddrPort
	for _, b := range s.backends {
		for _, sv := range b.servers {
			if ap, err := netip.ParseAddrPort(sv.addr); err == nil {
				out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			}
		}
	}
	s.dests.Store(&out)
}

// placedToward counts a TIME-WAIT the proxy just took on a back leg toward
// dest, and re-checks that destination's port share with it.
func (a *autoWatch) placedToward(dest netip.AddrPort) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.placedTo[dest]++
	if a.ports[dest] || a.portRange == 0 {
		return
	}
	n := a.sampledTo[dest] + a.placedTo[dest]
	next := policy.Watch(a.cfg, policy.Figures{HostTW: -1 << 31, DestTW: n, PortRange: a.portRange}, policy.AutoState{})
	if next.PortSaving {
		a.ports[dest] = true
		a.switched(policy.ReasonPorts, true, zap.Stringer("backend", dest), zap.Int("time_wait", n))
	}
}

// state is what Resolve needs for leg toward peer: the host's pressure,
// and on the back leg the pressure on the ports toward peer.
func (a *autoWatch) state(leg policy.Leg, peer netip.AddrPort) policy.AutoState {
	s := policy.AutoState{HostSaving: a.host.Load()}
	if leg == policy.Back {
		a.mu.Lock()
		s.PortSaving = a.ports[peer]
		a.mu.Unlock()
	}
	return s
}
