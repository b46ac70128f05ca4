package proxy

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// BenchmarkFirstByte measures, per connection, the time from the client's
// connect to the first byte echoed back by the backend through the proxy:
// with a fresh dial for every session, and with the warm pool (the accept
// path then skips the connect). It reports the median as
// median-µs/first-byte.
//
//	go test -run '^$' -bench FirstByte ./proxy
func BenchmarkFirstByte(b *testing.B) {
	for _, tc := range []struct {
		name string
		warm int
	}{{"fresh_dial", 0}, {"warm_pool", 8}} {
		b.Run(tc.name, func(b *testing.B) {
			echo := loopback.Serve(b, func(c *net.TCPConn) {
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
				io.Copy(io.Discard, c)
				c.Close()
			})
			be := defaultBackend(echo)
			be.Pool = config.Defaults().Backend.Pool
			be.Pool.Warm = tc.warm
			h := startProxy(b, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
			done := make(chan struct{})
			go func() { // keep the record channel from filling up
				for {
					select {
					case <-h.records:
					case <-done:
						return
					}
				}
			}()
			defer close(done)
			samples := make([]time.Duration, 0, b.N)
			buf := make([]byte, 1)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					b.Fatal(err)
				}
				c.Write([]byte{'x'})
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(t0))
				c.Close()
			}
			b.StopTimer()
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "median-µs/first-byte")
		})
	}
}
