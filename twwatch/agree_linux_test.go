package twwatch_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closeproxy/closeproxy/admin"
	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/proxy"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
)

// eofBackend reads each connection to EOF and then closes it: a dialer
// that closes first is left in TIME-WAIT toward it. It also holds the
// proxy's warm pool until the pool resets its connections.
func eofBackend(t *testing.T) net.Listener {
	t.Helper()
	ln := unvisitedListener(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

// unvisitedListener listens on a port no TIME-WAIT socket points at. A
// port the kernel hands out may have been another test's listener within
// the last minute, whose clients' TIME-WAIT sockets toward it outlive it
// (they do not stop a new bind) and would count toward this backend from
// the proxy's first sample on. Where sock_diag cannot list, the first
// listener is taken (the test then skips).
func unvisitedListener(t *testing.T) net.Listener {
	t.Helper()
	var visited []net.Listener // kept open while looking, so that no port comes twice
	defer func() {
		for _, l := range visited {
			l.Close()
		}
	}()
	for range 20 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		at := &sockdiag.Filter{Peers: []netip.AddrPort{ln.Addr().(*net.TCPAddr).AddrPort()}}
		if socks, err := sockdiag.ListMatching(at, sockdiag.TimeWait); err != nil || len(socks) == 0 {
			return ln
		}
		visited = append(visited, ln)
	}
	t.Fatal("20 listeners in a row found TIME-WAIT sockets toward their ports")
	return nil
}

// dialerTimeWaits leaves n TIME-WAIT sockets toward ln on this host, as
// the proxy's back leg does when it closes first, and waits until the
// kernel lists them (the last ACK may be handled after Close returns:
// polled, with a deadline). The sockets live in the host's namespace,
// whose TIME-WAIT table other tests running beside this one may fill: a
// kernel that destroyed sockets for want of room meanwhile
// (TCPTimeWaitOverflow) skips t, as a host that cannot keep the very
// sockets the test is about.
func dialerTimeWaits(t *testing.T, ln net.Listener, n int) {
	t.Helper()
	mark := procnet.MarkTimeWaitOverflow()
	var locals []netip.AddrPort
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		locals = append(locals, c.LocalAddr().(*net.TCPAddr).AddrPort())
		c.Close()
	}
	peer := ln.Addr().(*net.TCPAddr).AddrPort()
	toward := &sockdiag.Filter{Peers: []netip.AddrPort{peer}}
	const wait = 10 * time.Second
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		socks, err := sockdiag.ListMatching(toward, sockdiag.TimeWait)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, l := range locals {
			found += sockdiag.Count(socks, func(s sockdiag.Socket) bool { return s.Local == l && s.Peer == peer })
		}
		if found == n {
			return
		}
		if time.Now().After(deadline) {
			if d, ok := mark.Covers(n - found); ok {
				t.Skipf("%d of %d TIME-WAIT sockets toward %v after %v: the host's TIME-WAIT table was full (the kernel destroyed %d meanwhile, TCPTimeWaitOverflow)", found, n, peer, wait, d)
			}
			t.Fatalf("%d of %d TIME-WAIT sockets toward %v after %v; the test's sockets: %s", found, n, peer, wait, socketsOf(t, toward, locals))
		}
	}
}

// socketsOf words the states of the sockets toward f's peers from locals.
func socketsOf(t *testing.T, f *sockdiag.Filter, locals []netip.AddrPort) string {
	t.Helper()
	socks, err := sockdiag.ListMatching(f, sockdiag.Established, sockdiag.FinWait1, sockdiag.FinWait2,
		sockdiag.TimeWait, sockdiag.CloseWait, sockdiag.LastAck, sockdiag.Closing)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range locals {
		fmt.Fprintf(&b, "%v:", l)
		for _, s := range socks {
			if s.Local == l {
				fmt.Fprintf(&b, " state %d", s.State)
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}

// Thresholds that switch auto at the first TIME-WAIT toward the backend
// and never for the host; intervals that leave every sample to the test.
const agreeConfig = `
[admin]
kernel_sample_interval = "1h"
[auto]
tw_budget = 1048576
port_share = 0.000001
port_resume = 0.000001
sample_interval = "1h"
[[listener]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
[[backend]]
name = "app"
address = "%s"
  [backend.close]
  time_wait = "auto"
`

// One watcher, shared as cmd/closeproxy shares it: auto switches on the
// very figure of the sample that /metrics shows.
func TestAutoAndMetricsSeeTheSameSample(t *testing.T) {
	back := eofBackend(t)
	if _, err := sockdiag.ListMatching(&sockdiag.Filter{Peers: []netip.AddrPort{back.Addr().(*net.TCPAddr).AddrPort()}}, sockdiag.TimeWait); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	dest := back.Addr().(*net.TCPAddr).AddrPort()
	cfg, err := config.Parse(fmt.Appendf(nil, agreeConfig, dest), "agree.toml")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	w := twwatch.New(cfg, log)
	adm := admin.New(cfg, log, admin.WithWatcher(w))
	srv, err := proxy.New(cfg, log, proxy.WithObserver(adm), proxy.WithWatcher(w))
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := start(t, w, adm, srv)

	dialerTimeWaits(t, back, 2)
	s := w.Refresh()
	n, ok := s.Toward(dest)
	if !ok || n < 2 {
		t.Fatalf("sample %d: toward %v %d (read %v), want ≥ 2", s.Seq, dest, n, ok)
	}
	// The switch's line is written by a goroutine of its own (an event
	// loop must never wait for a log sink), and the log offers no signal:
	// look until it is there.
	var switches []observer.LoggedEntry
	for deadline := time.Now().Add(5 * time.Second); len(switches) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		switches = logs.FilterMessage("auto: pressure, new closes switch to safe resets").
			FilterField(zap.String("reason", policy.ReasonPorts)).All()
	}
	if len(switches) != 1 || switches[0].ContextMap()["time_wait"] != int64(n) {
		t.Errorf("auto switched %d times (%v), want once at the sample's %d toward %v", len(switches), switches, n, dest)
	}
	got := scrape(t, metricsURL)
	if v := got[`closeproxy_kernel_time_wait{leg="back"}`]; v != float64(s.Back.Value) || s.Back.Value != n {
		t.Errorf(`closeproxy_kernel_time_wait{leg="back"} = %v, sample's back %d, toward %v %d: want all equal`, v, s.Back.Value, dest, n)
	}
	if v := got[`closeproxy_kernel_time_wait_host`]; v != float64(s.Host.Value) {
		t.Errorf("closeproxy_kernel_time_wait_host = %v, want the sample's %d", v, s.Host.Value)
	}
	if v := got[`closeproxy_auto_switches_total{reason="ports_toward_backend",to="nowhere"}`]; v != 1 {
		t.Errorf("closeproxy_auto_switches_total{reason=ports_toward_backend,to=nowhere} = %v, want 1", v)
	}
}

// start runs the admin listener and the proxy until the test ends, and
// returns the metrics URL once the proxy serves. The watcher is not run:
// with intervals of an hour its Run would only add a first sample at a
// moment the test does not control; the proxy takes one when auto starts,
// the test takes the others.
func start(t *testing.T, w *twwatch.Watcher, adm *admin.Admin, srv *proxy.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { adm.Serve(ctx, ln) })
	wg.Go(func() { srv.Serve(ctx) })
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		cancel()
		wg.Wait()
	})
	// Serving is set under the lock that starts auto with its first
	// sample: after it, no sample is taken but the test's.
	for deadline := time.Now().Add(3 * time.Second); !srv.Serving(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("proxy not serving within 3s")
		}
	}
	if w.Latest() == nil {
		t.Fatal("auto started without a first sample")
	}
	return "http://" + ln.Addr().String() + "/metrics"
}

// scrape reads the metrics, by name and labels as written.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
