package twwatch

import (
	"fmt"
	"net"
	"testing"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// BenchmarkSampleBusyHost is one sample of the watcher (every figure auto
// and the metrics read) where the host holds 20,000 TIME-WAIT sockets that
// are not the proxy's and 500 on its listener's port, in a network
// namespace of the benchmark's own (root only). The /proc figures are the
// process's namespace's, not that one's: /proc/net follows the process,
// not the thread.
//
//	taskset -c 0 go test -run '^$' -bench BusyHost ./twwatch
func BenchmarkSampleBusyHost(b *testing.B) {
	const noise, ours, noisePorts = 20000, 500, 50
	ns := loopback.NewNetns(b)
	var w *Watcher
	var err error
	ns.Do(func() {
		var front net.Listener
		if front, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return
		}
		defer front.Close()
		if err = loopback.LeaveTimeWaits(front, ours); err != nil {
			return
		}
		for range noisePorts {
			ln, lerr := net.Listen("tcp4", "127.0.0.1:0")
			if lerr != nil {
				err = lerr
				return
			}
			err = loopback.LeaveTimeWaits(ln, noise/noisePorts)
			ln.Close()
			if err != nil {
				return
			}
		}
		cfg := &config.Config{
			Listeners: []config.Listener{{Name: "web", Listen: front.Addr().String()}},
			Backends:  []config.Backend{{Name: "app", Servers: []config.Server{{Address: "127.0.0.1:1"}}}},
		}
		w = New(cfg, zap.NewNop())
		if s := w.Refresh(); s.Front.Value != ours {
			err = fmt.Errorf("front TIME-WAIT %d (%v), want %d", s.Front.Value, s.Err, ours)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	ns.Do(func() {
		b.ResetTimer()
		for range b.N {
			w.Refresh()
		}
		b.StopTimer()
	})
	socks := 0
	ns.Do(func() {
		all, _ := sockdiag.List(sockdiag.TimeWait)
		socks = len(all)
	})
	b.ReportMetric(float64(socks), "timewait-on-host")
}
