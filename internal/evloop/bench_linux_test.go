package evloop

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/proxy"
)

// The A/B: the same clients and backend, in this process, through
// (A) the prototype and (B) today's proxy.Server in tcp mode, and with no
// proxy at all (direct) so that the client's and backend's own share can
// be subtracted. Run pinned to one CPU so that every candidate pays for
// everything on the same core:
//
//	taskset -c 1 go test ./internal/evloop -run '^$' -bench . -benchtime 5000x -count 3

const (
	request  = "GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
	response = "HTTP/1.1 200 OK\r\nContent-Length: 40\r\nConnection: close\r\n\r\n0123456789012345678901234567890123456789"
)

// candidate starts one way to reach be and returns the address clients
// dial; a nil start is direct.
type candidate struct {
	name  string
	start func(b *testing.B, be netip.AddrPort) netip.AddrPort
}

var candidates = []candidate{
	{"direct", func(_ *testing.B, be netip.AddrPort) netip.AddrPort { return be }},
	{"evloop", func(b *testing.B, be netip.AddrPort) netip.AddrPort {
		return start(b, Config{Backend: be}).Addr()
	}},
	{"proxy_tcp", func(b *testing.B, be netip.AddrPort) netip.AddrPort { return startProxy(b, be, false, "goroutines") }},
	{"proxy_tcp_records", func(b *testing.B, be netip.AddrPort) netip.AddrPort { return startProxy(b, be, true, "goroutines") }},
	{"proxy_tcp_loop", func(b *testing.B, be netip.AddrPort) netip.AddrPort { return startProxy(b, be, false, "loop") }},
}

// startProxy runs today's proxy on its defaults (tcp mode, warm pool of
// 8) but with no session or pool cap, as docs/performance.md's bench
// does, from a configuration text, as demo/ does. records writes every
// teardown record as JSON to io.Discard; otherwise log.teardown =
// "errors" and the logger is zap.NewNop, which leaves the relay's cost.
func startProxy(b *testing.B, be netip.AddrPort, records bool, relay string) netip.AddrPort {
	b.Helper()
	teardown, opts := "errors", []proxy.Option(nil)
	if records {
		teardown = "all"
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		opts = append(opts, proxy.WithRecordLog(zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zap.InfoLevel))))
	}
	cfg, err := config.Parse([]byte(proxyConfig(teardown, relay, be)), "ab.toml")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(cfg, zap.NewNop(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		cancel()
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), ioTimeout)
		defer scancel()
		srv.Shutdown(sctx)
		cancel()
		<-served
	})
	return srv.Addrs()[0].(*net.TCPAddr).AddrPort()
}

// proxyConfig is the A/B's configuration: one listener, one backend,
// defaults but the caps.
func proxyConfig(teardown, relay string, be netip.AddrPort) string {
	return fmt.Sprintf(`
relay = %q
[log]
teardown = %q
[[listener]]
name = "ab"
listen = "127.0.0.1:0"
backend = "app"
max_connections = 0
[[backend]]
name = "app"
address = %q
  [backend.pool]
  max_conns = 0
`, relay, teardown, be)
}

// cpuTime is this process's user and system CPU so far.
func cpuTime(b *testing.B) (user, sys time.Duration) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// reportCPU reports the CPU used since (user0, sys0) per connection: in
// all, and split into user (Go: runtime, relay, net package) and system
// (the kernel: sockets, loopback TCP on both ends).
func reportCPU(b *testing.B, user0, sys0 time.Duration) {
	user, sys := cpuTime(b)
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(per(user-user0+sys-sys0), "cpu-µs/conn")
	b.ReportMetric(per(user-user0), "user-µs/conn")
	b.ReportMetric(per(sys-sys0), "sys-µs/conn")
}

// shortConn is one short connection: connect, send the request, read the
// answer to EOF (the backend closed and the proxy passed its FIN), close.
func shortConn(a netip.AddrPort, buf []byte) error {
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(a))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, request); err != nil {
		return err
	}
	n, err := io.ReadFull(c, buf[:len(response)])
	if err != nil || string(buf[:n]) != response {
		return fmt.Errorf("read %q: %v", buf[:n], err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		return fmt.Errorf("after the answer: %d bytes, %v; want EOF", n, err)
	}
	return nil
}

// BenchmarkShortConn is one short connection per op, one at a time (c1)
// and 16 at once (c16). Besides ns/op and allocs/op (both include the
// client's and the backend's share: subtract direct) it reports
// cpu-µs/conn, the process's getrusage delta per connection, and its
// user and system parts.
func BenchmarkShortConn(b *testing.B) {
	for _, conc := range []int{1, 16} {
		for _, cand := range candidates {
			b.Run(fmt.Sprintf("%s/c%d", cand.name, conc), func(b *testing.B) {
				be := backend(b, answerAndClose(request, response))
				addr := cand.start(b, be)
				b.ReportAllocs()
				b.ResetTimer()
				user0, sys0 := cpuTime(b)
				runShort(b, addr, conc)
				b.StopTimer()
				reportCPU(b, user0, sys0)
			})
		}
	}
}

// runShort makes b.N short connections to addr over conc goroutines.
func runShort(b *testing.B, addr netip.AddrPort, conc int) {
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for w := range conc {
		n := b.N / conc
		if w < b.N%conc {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for range n {
				if err := shortConn(addr, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
