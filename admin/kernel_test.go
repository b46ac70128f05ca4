package admin

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
	"github.com/closeproxy/closeproxy/twwatch/twwatchtest"
)

func sock(st sockdiag.State, local, peer string) sockdiag.Socket {
	return sockdiag.Socket{State: st, Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
}

// The gauges are a sample of the shared watcher, figure for figure, taken
// by the scrape when there is none younger than kernel_sample_interval;
// a figure it could not read is absent.
func TestKernelGaugesShowTheSharedSample(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: ":8080", Backend: "app"}},
		Backends:  []config.Backend{{Name: "app", Address: "10.0.0.2:80"}},
		Admin:     config.Admin{KernelSample: time.Hour},
	}
	files := map[string]string{
		procnet.SockstatPath:     "TCP: inuse 1 orphan 0 tw 57 alloc 1 mem 1\n",
		procnet.MaxTWBucketsPath: "262144\n",
	}
	socks := []sockdiag.Socket{
		sock(sockdiag.TimeWait, "10.0.0.9:8080", "10.0.0.5:40000"),
		sock(sockdiag.TimeWait, "10.0.0.9:8080", "10.0.0.5:40001"),
		sock(sockdiag.TimeWait, "10.0.0.9:50000", "10.0.0.2:80"),
		sock(sockdiag.FinWait2, "10.0.0.9:50001", "10.0.0.2:80"),
	}
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(twwatchtest.Kernel(files, socks)))
	a := New(cfg, zaptest.NewLogger(t), WithWatcher(w))
	base := serve(t, a) // a shared watcher: Serve does not run it
	if w.Latest() != nil {
		t.Fatal("a sample before the first scrape")
	}
	got := scrape(t, base)
	s := w.Latest()
	if s == nil || s.Seq != 1 {
		t.Fatalf("after the first scrape: latest sample %v, want the one it took (1)", s)
	}
	if scrape(t, base); w.Latest().Seq != 1 {
		t.Errorf("a second scrape within kernel_sample_interval took sample %d, want none", w.Latest().Seq)
	}
	want := map[string]float64{
		`closeproxy_kernel_time_wait{leg="front"}`: float64(s.Front.Value),
		`closeproxy_kernel_time_wait{leg="back"}`:  float64(s.Back.Value),
		"closeproxy_kernel_time_wait_host":         float64(s.Host.Value),
		"closeproxy_kernel_tcp_max_tw_buckets":     float64(s.MaxTWBuckets.Value),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want the sample's %v", k, g, ok, v)
		}
	}
	if s.Front.Value != 2 || s.Back.Value != 1 || s.Host.Value != 57 {
		t.Errorf("sample front %d back %d host %d, want 2, 1, 57", s.Front.Value, s.Back.Value, s.Host.Value)
	}
	if _, ok := got["closeproxy_kernel_tcp_timewait_overflow"]; ok {
		t.Error("closeproxy_kernel_tcp_timewait_overflow present; /proc/net/netstat was not read")
	}
}

// TcpExt TCPTimeWaitOverflow is exported as the counter it is, under a
// _total name, with the value read.
func TestKernelOverflowCounter(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: ":8080", Backend: "app"}},
		Backends:  []config.Backend{{Name: "app", Address: "10.0.0.2:80"}},
	}
	files := map[string]string{procnet.NetstatPath: "TcpExt: SyncookiesSent TCPTimeWaitOverflow\nTcpExt: 0 4242\n"}
	w := twwatch.New(cfg, zaptest.NewLogger(t), twwatch.WithKernel(twwatchtest.Kernel(files, nil)))
	base := serve(t, New(cfg, zaptest.NewLogger(t), WithWatcher(w)))
	w.Refresh()
	expect(t, scrape(t, base), map[string]float64{
		"closeproxy_kernel_time_wait_overflow_total": 4242,
		"closeproxy_kernel_tcp_timewait_overflow":    4242,
	})
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "# TYPE closeproxy_kernel_time_wait_overflow_total counter\n") {
		t.Error("closeproxy_kernel_time_wait_overflow_total is not typed counter")
	}
}
