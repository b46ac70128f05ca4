package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
	"github.com/closeproxy/closeproxy/twwatch/twwatchtest"
)

// fakeKernel is a fabricated host for a twwatch.Watcher: its files, and
// n TIME-WAIT sockets toward each address of toward.
func fakeKernel(files map[string]string, toward map[string]int) twwatch.Kernel {
	var socks []sockdiag.Socket
	for dest, n := range toward {
		for i := range n {
			socks = append(socks, sockdiag.Socket{State: sockdiag.TimeWait,
				Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(40000+i)), Peer: netip.MustParseAddrPort(dest)})
		}
	}
	return twwatchtest.Kernel(files, socks)
}

// testAutoWatch is an autoWatch whose switches' log lines are written
// before the test ends (they are written on goroutines of their own).
func testAutoWatch(t *testing.T, c config.Auto, log *zap.Logger) *autoWatch {
	a := newAutoWatch(c, log, nopObserver{})
	t.Cleanup(a.waitLogged)
	return a
}

type resolverFunc func(host string) []netip.Addr

func (f resolverFunc) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return f(host), nil
}

// auto decides from the watcher's samples: the budget from its
// tcp_max_tw_buckets, the host's count, and the count toward a backend
// written as a host name (resolved once by the watcher: auto used to see
// literal addresses only).
func TestAutoFollowsWatcherSamples(t *testing.T) {
	files := map[string]string{
		procnet.SockstatPath:     "TCP: inuse 1 orphan 0 tw 100 alloc 1 mem 1\n",
		procnet.MaxTWBucketsPath: "1000\n",
		procnet.PortRangePath:    "40000 40999\n",
	}
	dest := netip.MustParseAddrPort("10.0.0.3:80")
	cfg := &config.Config{
		Auto:     config.Defaults().Auto,
		Backends: []config.Backend{{Name: "app", Address: "app.internal:80", Close: config.Close{TimeWait: policy.TargetAuto}}},
	}
	w := twwatch.New(cfg, zaptest.NewLogger(t),
		twwatch.WithKernel(fakeKernel(files, map[string]int{dest.String(): 600})),
		twwatch.WithResolver(resolverFunc(func(string) []netip.Addr { return []netip.Addr{dest.Addr()} })))
	a := testAutoWatch(t, cfg.Auto, zaptest.NewLogger(t))
	defer w.Subscribe(a.onSample)()

	s := w.Refresh()
	if a.budget.Load() != 500 || a.sampled.Load() != int64(s.Host.Value) {
		t.Errorf("budget %d, sampled %d; want 500 (half of 1000) and the sample's %d", a.budget.Load(), a.sampled.Load(), s.Host.Value)
	}
	if st := a.state(policy.Back, dest); st.HostSaving || !st.PortSaving {
		t.Errorf("100 of 500 host TIME-WAIT, 600 of 1000 ports toward %v: state %+v, want port pressure only", dest, st)
	}
	files[procnet.SockstatPath] = strings.Replace(files[procnet.SockstatPath], "tw 100", "tw 600", 1)
	w.Refresh()
	if st := a.state(policy.Front, netip.AddrPort{}); !st.HostSaving {
		t.Errorf("600 of 500 host TIME-WAIT: state %+v, want host pressure", st)
	}
}

// Between samples, the TIME-WAITs the proxy places count toward the
// budget; the next sample replaces the estimate.
func TestAutoEstimatesBetweenSamples(t *testing.T) {
	files := map[string]string{procnet.SockstatPath: "TCP: tw 8\n", procnet.MaxTWBucketsPath: "20\n"}
	cfg := &config.Config{Auto: config.Defaults().Auto}
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(fakeKernel(files, nil)))
	a := testAutoWatch(t, cfg.Auto, zaptest.NewLogger(t))
	defer w.Subscribe(a.onSample)()
	w.Refresh()
	a.running.Store(true)
	for i := range 2 {
		if a.host.Load() {
			t.Fatalf("host pressure after %d placed (8 sampled, budget 10)", i)
		}
		a.placedTimeWait()
	}
	if !a.host.Load() {
		t.Fatal("no host pressure at 8 sampled + 2 placed, budget 10")
	}
	if got := fmt.Sprint(a.sampled.Load(), a.placed.Load()); got != "8 2" {
		t.Errorf("sampled, placed: %s; want 8 2", got)
	}
	w.Refresh()
	if a.placed.Load() != 0 {
		t.Errorf("placed %d after a new sample, want 0", a.placed.Load())
	}
}

// Back legs auto has withhold their FIN count toward their backend's port
// share from the withhold until their sessions end: a burst of graces
// switches to safe resets before the TIME-WAITs they leave are sampled.
func TestAutoCountsHeldBackLegs(t *testing.T) {
	files := map[string]string{procnet.SockstatPath: "TCP: tw 0\n", procnet.PortRangePath: "40000 40009\n"}
	dest := netip.MustParseAddrPort("10.0.0.3:80")
	cfg := &config.Config{
		Auto:     config.Defaults().Auto, // port_share 0.5, port_resume 0.4: 5 and 4 of 10 ports
		Backends: []config.Backend{{Name: "app", Address: dest.String(), Close: config.Close{TimeWait: policy.TargetAuto}}},
	}
	toward := map[string]int{dest.String(): 0}
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(fakeKernel(files, toward)))
	a := testAutoWatch(t, cfg.Auto, zaptest.NewLogger(t))
	defer w.Subscribe(a.onSample)()
	a.running.Store(true)
	w.Refresh()

	var releases []func()
	for i := range 4 {
		if a.state(policy.Back, dest).PortSaving {
			t.Fatalf("port pressure with %d back legs held of 10 ports", i)
		}
		releases = append(releases, a.hold(policy.Back, dest))
	}
	a.placedToward(dest) // a fifth port: 4 held + 1 placed = port_share
	if !a.state(policy.Back, dest).PortSaving {
		t.Fatal("no port pressure at 4 held + 1 placed of 10 ports")
	}
	if r := a.hold(policy.Front, dest); a.holding[dest] != 4 {
		t.Errorf("a front leg counted toward the backend's ports: holding %d, want 4", a.holding[dest])
	} else {
		r()
	}

	w.Refresh() // nothing sampled, 4 still held: above port_resume
	if !a.state(policy.Back, dest).PortSaving {
		t.Error("pressure off at a sample of 0 with 4 held, port_resume 4 of 10")
	}
	for _, r := range releases {
		r()
	}
	if len(a.holding) != 0 {
		t.Errorf("holding %v after every release, want none", a.holding)
	}
	w.Refresh()
	if a.state(policy.Back, dest).PortSaving {
		t.Error("pressure still on at a sample of 0 with nothing held")
	}
}

// A first FIN a leg using auto sent counts toward the budget from then
// until its session ends, before any record or sample shows its
// TIME-WAIT: sessions still waiting for their clients' FINs cannot take
// the host past the budget. A sample counts them on top of the kernel's
// figure.
func TestAutoCountsFINsOnTheirWay(t *testing.T) {
	files := map[string]string{procnet.SockstatPath: "TCP: tw 8\n", procnet.MaxTWBucketsPath: "20\n"}
	cfg := &config.Config{Auto: config.Defaults().Auto} // tw_resume 0.8: 8 of 10
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(fakeKernel(files, nil)))
	a := testAutoWatch(t, cfg.Auto, zaptest.NewLogger(t))
	defer w.Subscribe(a.onSample)()
	w.Refresh()
	a.running.Store(true)

	var releases []func()
	for i := range 2 {
		if a.host.Load() {
			t.Fatalf("host pressure with %d FINs on their way (8 sampled, budget 10)", i)
		}
		releases = append(releases, a.place(policy.Front, netip.AddrPort{}))
	}
	if !a.host.Load() {
		t.Fatal("no host pressure at 8 sampled + 2 on their way, budget 10")
	}
	files[procnet.SockstatPath] = "TCP: tw 7\n"
	w.Refresh() // 7 + 2 on their way: not under tw_resume's 8
	if !a.host.Load() {
		t.Error("pressure off at a sample of 7 with 2 FINs on their way, resume under 8")
	}
	for _, r := range releases {
		r()
	}
	if n := a.placing.Load(); n != 0 {
		t.Errorf("%d on their way after every release, want 0", n)
	}
	w.Refresh()
	if a.host.Load() {
		t.Error("pressure still on at a sample of 7 with nothing on its way")
	}
}

// A switch decided on an event loop (a close sending its first FIN there)
// does not wait for the log: with its sink blocked (a full pipe on
// stderr), the close goes on, and the line is written once the sink
// drains.
func TestAutoSwitchDoesNotWaitForTheLog(t *testing.T) {
	files := map[string]string{procnet.SockstatPath: "TCP: tw 9\n", procnet.MaxTWBucketsPath: "20\n"}
	cfg := &config.Config{Auto: config.Defaults().Auto}
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(fakeKernel(files, nil)))
	sink := &gateWriter{blocked: make(chan struct{}), release: make(chan struct{})}
	a := testAutoWatch(t, cfg.Auto, zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(sink), zap.InfoLevel)))
	t.Cleanup(func() { close(sink.release) }) // before waitLogged
	defer w.Subscribe(a.onSample)()
	w.Refresh()
	a.running.Store(true)

	placed := make(chan func())
	go func() { placed <- a.place(policy.Front, netip.AddrPort{}) }() // 9 + 1: the budget, a switch
	select {
	case release := <-placed:
		release()
	case <-time.After(5 * time.Second):
		t.Fatal("a close that switched auto waited 5s for the blocked log sink")
	}
	if !a.host.Load() {
		t.Error("no host pressure at 9 sampled + 1 on its way, budget 10")
	}
	select {
	case <-sink.blocked: // the switch's line, waiting for the sink
	case <-time.After(5 * time.Second):
		t.Error("the switch was never logged")
	}
}

// TestSessionsGetTheServersAutoHooks: the engine a session starts counts
// its first FINs and withheld back legs in its server's autoWatch.
func TestSessionsGetTheServersAutoHooks(t *testing.T) {
	a := testAutoWatch(t, config.Auto{}, zap.NewNop())
	a.running.Store(true) // as once some leg uses auto
	ss := &session{srv: &Server{auto: a}, ln: &config.Listener{}, bk: &backend{}}
	eng := ss.engine(context.Background(), nil)
	if eng.Auto == nil || eng.Hold == nil || eng.Placing == nil {
		t.Fatal("the session's engine lacks an auto hook")
	}
	dest := netip.MustParseAddrPort("10.0.0.2:8080")
	placed := eng.Placing(policy.Front, dest)
	held := eng.Hold(policy.Back, dest)
	a.mu.Lock()
	holding := a.holding[dest]
	a.mu.Unlock()
	if a.placing.Load() != 1 || holding != 1 {
		t.Fatalf("placing %d, holding toward %s %d: want 1 and 1", a.placing.Load(), dest, holding)
	}
	placed()
	held()
	if a.placing.Load() != 0 {
		t.Errorf("placing %d after release, want 0", a.placing.Load())
	}
}

// A TIME-WAIT a peer on loopback holds (a sidecar's backend that closed
// first) is on this host too: it counts toward the budget between
// samples, as the proxy's own do; one a remote peer holds does not.
func TestAutoCountsTimeWaitALocalPeerHolds(t *testing.T) {
	a := testAutoWatch(t, config.Defaults().Auto, zaptest.NewLogger(t))
	a.running.Store(true)
	local, remote := netip.MustParseAddrPort("127.0.0.1:8081"), netip.MustParseAddrPort("192.0.2.9:8081")
	td := &engine.Teardown{Back: engine.LegRecord{TimeWait: policy.SideBackend, Peer: local}, Front: engine.LegRecord{TimeWait: policy.SideClient, Peer: remote}}
	a.countPlaced(td)
	if n := a.placed.Load(); n != 1 {
		t.Errorf("placed %d after a local backend's TIME-WAIT and a remote client's, want 1", n)
	}
}
