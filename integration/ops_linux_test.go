package integration

import (
	"net/netip"
	"testing"
	"time"
)

// Operations, proved end to end: what /metrics says against the records
// and the kernel, a SIGHUP reload under load, and the drain on SIGTERM.

// adminAddr is where the tests put closeproxy's admin listener, inside the
// proxy namespace.
const adminAddr = "127.0.0.1:9901"

// TestMetricsAgreeWithRecordsAndKernel runs a known load through closeproxy
// — half the clients close first, half ask nginx's /close/ so that nginx
// closes first — and then reads /metrics: the counters must equal what the
// teardown records say, by leg, side and outcome, and the kernel gauges
// must equal what `ss` and /proc/net/sockstat say in the proxy namespace.
//
// The back leg's target is "proxy", so that both of the proxy's legs hold
// TIME-WAIT and neither gauge is trivially zero: clients that close first
// leave TIME-WAIT on lb and on the proxy's ports toward nginx; nginx
// closing first leaves it on web and on the proxy's listener port.
func TestMetricsAgreeWithRecordsAndKernel(t *testing.T) {
	const (
		size = 1000
		half = 150
		n    = 2 * half
	)
	topo := newCountingTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80),
		NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfigWith(
		GlobalOpts{AdminListen: adminAddr, KernelSampleInterval: "200ms"},
		ListenerOpts{
			Name: "web", Listen: front, Backend: web.Addr.String(),
			Back: CloseOpts{TimeWait: "proxy"},
		}))
	waitListening(t, topo, topo.Proxy, mustAddrPort(t, adminAddr), cp.Proc)

	runs := []*LoadRun{
		startLoad(t, topo, topo.LB, LoadOpts{
			Addr: front, N: half, C: 25, Path: web.BlobPath(size), Close: "client",
			ExpectBytes: size, SHA256: web.BlobSHA256(t, size),
		}),
		startLoad(t, topo, topo.LB, LoadOpts{
			Addr: front, N: half, C: 25, Path: "/close" + web.BlobPath(size), Close: "server",
			ExpectBytes: size, SHA256: web.BlobSHA256(t, size),
		}),
	}
	for _, r := range runs {
		requireAllOK(t, r.Wait(t), half)
	}
	recs := cp.WaitRecords(t, n, 10*time.Second)
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		waitTCPSettled(t, topo, ns, 10*time.Second)
	}

	m := scrape(t, topo.Proxy, adminAddr)
	if v, ok := m.Get("closeproxy_connections_accepted_total", "listener", "web"); !ok || v != n {
		t.Errorf("closeproxy_connections_accepted_total{listener=web} = %v (present %v), want %d", v, ok, n)
	}
	if v, ok := m.Get("closeproxy_connections_active", "listener", "web"); !ok || v != 0 {
		t.Errorf("closeproxy_connections_active{listener=web} = %v (present %v), want 0", v, ok)
	}
	for _, c := range []struct{ metric, label, field string }{
		{"closeproxy_first_fin_total", "side", "first_fin"},
		{"closeproxy_time_wait_placed_total", "side", "time_wait"},
		{"closeproxy_closes_total", "close", "close"},
	} {
		got, want := m.By(c.metric, "leg", c.label), legCounts(recs, c.field)
		t.Logf("%s: metrics %s; records %s", c.metric, fmtCounts(got), fmtCounts(want))
		if !sameCounts(got, want) {
			t.Errorf("%s by leg and %s: metrics %s, records %s", c.metric, c.label, fmtCounts(got), fmtCounts(want))
		}
	}
	got, want := m.By("closeproxy_sessions_total", "listener", "backend", "outcome"),
		countBy(recs, "listener", "backend", "outcome")
	if !sameCounts(got, want) {
		t.Errorf("closeproxy_sessions_total: metrics %s, records %s", fmtCounts(got), fmtCounts(want))
	}
	if want["web/web/ok"] != n {
		t.Errorf("records by outcome %s, want %d ok", fmtCounts(want), n)
	}

	// The records' placements are checked against the kernel elsewhere
	// (TestClosePolicyMatrix); here, the four places in plain numbers.
	tw := legTimeWait(t, topo)
	t.Logf("kernel TIME-WAIT: %s", tw)
	if tw != (twCounts{LB: half, ProxyBack: half, ProxyFront: half, Web: half}) {
		t.Errorf("kernel TIME-WAIT %s, want %d on each of the four ends", tw, half)
	}

	// The kernel gauges are samples taken every kernel_sample_interval, so
	// a scrape may still show a sample from before the load settled: poll
	// /metrics, with a deadline, until each gauge equals what ss and
	// sockstat say now (they no longer change: TIME-WAIT lasts 60 s).
	kernel := func() map[string]float64 {
		var frontTW, backTW int
		for _, s := range timeWaitSockets(t, topo, topo.Proxy, "") {
			if s.Local.Port() == 8080 {
				frontTW++
			}
			if s.Peer == web.Addr {
				backTW++
			}
		}
		return map[string]float64{
			"front": float64(frontTW), "back": float64(backTW),
			"host": float64(sockstatTW(t, topo, topo.Proxy)),
		}
	}
	gauges := func(m Metrics) map[string]float64 {
		out := map[string]float64{}
		for _, leg := range []string{"front", "back"} {
			if v, ok := m.Get("closeproxy_kernel_time_wait", "leg", leg); ok {
				out[leg] = v
			}
		}
		if v, ok := m.Get("closeproxy_kernel_time_wait_host"); ok {
			out["host"] = v
		}
		return out
	}
	deadline := time.Now().Add(3 * time.Second)
	polls := 0
	for {
		k := kernel()
		g := gauges(scrape(t, topo.Proxy, adminAddr))
		polls++
		if len(g) == 3 && sameCounts(g, k) && k["front"] == half && k["back"] == half {
			t.Logf("kernel gauges %s equal ss/sockstat %s after %d scrapes", fmtCounts(g), fmtCounts(k), polls)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d scrapes: kernel gauges %s, ss/sockstat in %s %s", polls, fmtCounts(g), topo.Proxy, fmtCounts(k))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range []string{"closeproxy_kernel_tcp_max_tw_buckets", "closeproxy_kernel_tcp_timewait_overflow"} {
		if _, ok := m.Get(name); !ok {
			t.Errorf("%s absent", name)
		}
	}
}

func mustAddrPort(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
