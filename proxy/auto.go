package proxy

import (
	"cmp"
	"context"
	"net/netip"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/twwatch"
)

// defaultMaxTW is the kernel's usual tcp_max_tw_buckets, for the default
// budget while the real one has not been read.
const defaultMaxTW = 131072

// autoWatch keeps what time_wait = "auto" decides from, and its
// hysteresis. The figures come from the process's twwatch.Watcher, the
// same samples the admin gauges report: this host's TIME-WAIT total and
// the proxy's TIME-WAIT toward each backend address. Between samples the
// TIME-WAITs the proxy placed itself are added, so a burst cannot
// overshoot the budget by a whole interval; and each counts from the
// first FIN that leads to it, not from its record (written only once the
// peer's FIN came), so sessions still closing cannot overshoot it either.
// Sessions only read the state.
type autoWatch struct {
	cfg     policy.AutoConfig // TWBudget as configured: 0 follows tcp_max_tw_buckets
	log     *zap.Logger
	obs     Observer
	budget  atomic.Int64   // the host budget in force
	placed  atomic.Int64   // TIME-WAITs the proxy placed since the last sample
	placing atomic.Int64   // first FINs auto sent in sessions not yet ended: TIME-WAITs on their way
	sampled atomic.Int64   // the host's TIME-WAIT at the last sample
	host    atomic.Bool    // host pressure on (hysteresis state)
	running atomic.Bool    // samples arrive: some leg uses auto
	logging sync.WaitGroup // switches' log lines being written (switched)

	mu        sync.Mutex
	ports     map[netip.AddrPort]bool // port pressure on, per backend address
	sampledTo map[netip.AddrPort]int  // the proxy's TIME-WAIT toward it at the last sample
	placedTo  map[netip.AddrPort]int  // placed toward it since
	holding   map[netip.AddrPort]int  // back legs toward it withholding their FIN, or done withholding, in sessions not yet ended
	portRange int

	// The engine's hooks, a.state, a.hold and a.place bound once: a
	// method value made per session costs an allocation each.
	stateFn   func(policy.Leg, netip.AddrPort) policy.AutoState
	holdFn    func(policy.Leg, netip.AddrPort) (release func())
	placingFn func(policy.Leg, netip.AddrPort) (release func())
}

func newAutoWatch(c config.Auto, log *zap.Logger, obs Observer) *autoWatch {
	a := &autoWatch{
		cfg: policy.AutoConfig{TWBudget: c.TWBudget, TWResume: c.TWResume, PortShare: c.PortShare, PortResume: c.PortResume},
		log: log, obs: obs, ports: map[netip.AddrPort]bool{},
		sampledTo: map[netip.AddrPort]int{}, placedTo: map[netip.AddrPort]int{}, holding: map[netip.AddrPort]int{},
	}
	a.budget.Store(int64(cmp.Or(c.TWBudget, defaultMaxTW/2)))
	a.stateFn, a.holdFn, a.placingFn = a.state, a.hold, a.place
	return a
}

// policyCfg is the thresholds with the budget in force.
func (a *autoWatch) policyCfg() policy.AutoConfig {
	c := a.cfg
	c.TWBudget = int(a.budget.Load())
	return c
}

// onSample takes a new sample's figures; the Watcher calls it, one sample
// at a time. A figure not read changes nothing: no figure, no pressure.
func (a *autoWatch) onSample(s *twwatch.Sample) {
	if a.cfg.TWBudget == 0 && s.MaxTWBuckets.OK && s.MaxTWBuckets.Value > 0 {
		a.budget.Store(int64(s.MaxTWBuckets.Value / 2))
	}
	if s.Host.OK {
		a.sampled.Store(int64(s.Host.Value))
		a.placed.Store(0)
		a.watchHost(s.Host.Value + int(a.placing.Load()))
	}
	if s.Back.OK && s.UsablePorts.OK {
		a.watchPorts(s.Destinations(), s.UsablePorts.Value)
	}
}

// watchPorts applies each backend address's port hysteresis to its count.
func (a *autoWatch) watchPorts(perDest map[netip.AddrPort]int, portRange int) {
	cfg := a.policyCfg()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.portRange = portRange
	clear(a.placedTo)
	for dest, n := range perDest {
		a.sampledTo[dest] = n
		n += a.holding[dest]
		prev := policy.AutoState{PortSaving: a.ports[dest]}
		next := policy.Watch(cfg, policy.Figures{HostTW: -1 << 31, DestTW: n, PortRange: portRange}, prev)
		if next.PortSaving != prev.PortSaving {
			a.switched(policy.ReasonPorts, next.PortSaving, zap.Stringer("backend", dest), zap.Int("time_wait", n))
		}
		a.ports[dest] = next.PortSaving
	}
}

// watchHost applies the host budget's hysteresis to an estimate.
func (a *autoWatch) watchHost(tw int) {
	cfg := a.policyCfg()
	prev := policy.AutoState{HostSaving: a.host.Load()}
	next := policy.Watch(cfg, policy.Figures{HostTW: tw}, prev)
	if next.HostSaving != prev.HostSaving && a.host.CompareAndSwap(prev.HostSaving, next.HostSaving) {
		a.switched(policy.ReasonHostBudget, next.HostSaving, zap.Int("time_wait", tw), zap.Int("budget", cfg.TWBudget))
	}
}

// switched counts a switch and logs it. A switch can be decided on an
// event loop (a close there holds a leg or sends a first FIN), which must
// never wait for a log sink (a full pipe on stderr), so the line is
// written by a goroutine of its own; switches are rare (on at most once
// between samples, off only at a sample). Shutdown waits for the lines
// (waitLogged).
func (a *autoWatch) switched(reason string, on bool, fields ...zap.Field) {
	a.obs.AutoSwitched(reason, on)
	msg := "auto: pressure gone, closes back to the accepting side"
	if on {
		msg = "auto: pressure, new closes switch to safe resets"
	}
	fields = append(fields, zap.String("reason", reason))
	a.logging.Go(func() { a.log.Info(msg, fields...) })
}

// waitLogged waits until every switch's line is written.
func (a *autoWatch) waitLogged() { a.logging.Wait() }

// countPlaced counts the TIME-WAITs a finished session left on this host,
// while some leg uses auto (without samples nothing would ever reset
// them): the proxy's, and a peer's on loopback (a sidecar's backend,
// whose TIME-WAIT the host's count holds as well).
func (a *autoWatch) countPlaced(td *engine.Teardown) {
	if !a.running.Load() {
		return
	}
	for _, l := range []*engine.LegRecord{&td.Front, &td.Back} {
		if proxyHolds(l.TimeWait) || peerHoldsHere(l) {
			a.placedTimeWait()
		}
	}
	if proxyHolds(td.Back.TimeWait) {
		a.placedToward(td.Back.Peer)
	}
}

// peerHoldsHere reports a TIME-WAIT l's peer holds on this host: a peer
// on loopback that closed first.
func peerHoldsHere(l *engine.LegRecord) bool {
	return (l.TimeWait == policy.SideClient || l.TimeWait == policy.SideBackend) && l.Peer.Addr().Unmap().IsLoopback()
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
	a.placed.Add(1)
	a.checkHost()
}

// place counts a TIME-WAIT a leg using auto is on its way to leave on the
// proxy: it sent the first FIN. The count lasts until its session ends,
// when the record's TIME-WAIT, if any, is counted by countPlaced instead
// (a peer that resets leaves none). Between its peer's FIN and the end of
// its session a TIME-WAIT the sample already saw counts twice, which errs
// on the side of the budget.
func (a *autoWatch) place(policy.Leg, netip.AddrPort) (release func()) {
	if !a.running.Load() {
		return func() {}
	}
	a.placing.Add(1)
	a.checkHost()
	return func() { a.placing.Add(-1) }
}

// checkHost switches to safe resets once the host's estimate reaches the
// budget: the last sample, the TIME-WAITs placed since and those on their
// way. Only a sample switches back.
func (a *autoWatch) checkHost() {
	est := a.sampled.Load() + a.placed.Load() + a.placing.Load()
	if !a.host.Load() && est >= a.budget.Load() {
		a.watchHost(int(est))
	}
}

// placedToward counts a TIME-WAIT the proxy just took on a back leg toward
// dest, and re-checks that destination's port share with it.
func (a *autoWatch) placedToward(dest netip.AddrPort) {
	dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	cfg := a.policyCfg()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.placedTo[dest]++
	a.checkPortsLocked(cfg, dest)
}

// hold counts a back leg toward dest that auto had withhold its FIN: it
// keeps its port until its session ends, and may leave a TIME-WAIT then
// (a fallback FIN), which the count between samples would learn only
// once the record is written. Counting it from the withhold on keeps a
// burst of sessions in their grace from taking the ports before auto
// switches. release ends the count; the record's TIME-WAIT, if any, is
// counted by countPlaced right after.
func (a *autoWatch) hold(leg policy.Leg, dest netip.AddrPort) (release func()) {
	if leg != policy.Back || !a.running.Load() {
		return func() {}
	}
	dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	cfg := a.policyCfg()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holding[dest]++
	a.checkPortsLocked(cfg, dest)
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.holding[dest]--; a.holding[dest] <= 0 {
			delete(a.holding, dest)
		}
	}
}

// checkPortsLocked switches dest's back legs to safe resets once its
// estimate reaches port_share: the last sample, the TIME-WAITs placed
// since and the legs held. Only a sample switches back.
func (a *autoWatch) checkPortsLocked(cfg policy.AutoConfig, dest netip.AddrPort) {
	if a.ports[dest] || a.portRange == 0 {
		return
	}
	n := a.sampledTo[dest] + a.placedTo[dest] + a.holding[dest]
	next := policy.Watch(cfg, policy.Figures{HostTW: -1 << 31, DestTW: n, PortRange: a.portRange}, policy.AutoState{})
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
		s.PortSaving = a.ports[netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())]
		a.mu.Unlock()
	}
	return s
}

// WithWatcher has the server read the kernel's TIME-WAIT figures from w,
// the process's one watcher, which the caller runs (Run) and follows
// reloads with (Update). Without it the server makes its own, runs it
// while some leg uses auto, and updates it on Reload.
func WithWatcher(w *twwatch.Watcher) Option {
	return func(s *Server) { s.watch = w }
}

// startAutoLocked subscribes auto to the samples once some leg uses auto,
// with a first sample taken at once (figures before the first session
// closes), and runs the server's own watcher if it has one. Both stop with
// the pools at shutdown.
func (s *Server) startAutoLocked() {
	if s.autoStop != nil || !s.cfg.UsesAuto() {
		return
	}
	unsubscribe := s.watch.Subscribe(s.auto.onSample)
	s.watch.Refresh()
	s.auto.running.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	s.autoStop = func() { cancel(); unsubscribe(); s.auto.running.Store(false) }
	if s.ownWatch {
		s.pools.Add(1)
		go func() { defer s.pools.Done(); s.watch.Run(ctx) }()
	}
}
