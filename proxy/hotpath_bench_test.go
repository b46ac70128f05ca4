package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// The hot-path benchmarks: what one connection costs the process, from
// accept to its teardown record, and what an idle session holds. Client,
// proxy and backend share the process, so the "direct" variants (no proxy)
// are the baseline to subtract. Pin them to one CPU, as docs/performance.md
// does:
//
//	taskset -c 0 go test -run '^$' -bench 'Conn|Idle' -benchtime 3000x ./proxy

// benchRequest asks the backend to answer and close; benchKeepAlive to
// answer and wait for the next request or the client's FIN.
const (
	benchRequest   = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	benchKeepAlive = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
)

// benchBackend answers each request with a small response; it closes once
// the request says Connection: close, and otherwise when the peer's FIN
// comes.
func benchBackend(b *testing.B) string {
	return loopback.Serve(b, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			closing, err := readHead(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, response); err != nil || closing {
				return
			}
		}
	})
}

// readHead reads a request head and reports whether it asks to close.
func readHead(br *bufio.Reader) (closing bool, err error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(line) == 2 {
			return closing, nil
		}
		closing = closing || bytes.EqualFold(line, []byte("Connection: close\r\n"))
	}
}

// benchServer starts the real proxy from a configuration text, as
// production loads one, with records on (a JSON logger writing to
// io.Discard, as cmd/closeproxy encodes them) and a count of ended
// sessions. Its own log keeps only warnings, in memory: with relay =
// "loop", loops that could not start or refused a session say so there
// and the sessions relay on goroutines, which fails the benchmark (its
// figures would be the goroutines relay's).
func benchServer(b *testing.B, text string) (addr string, ended *atomic.Int64) {
	b.Helper()
	cfg, err := config.Parse([]byte(text), "bench.toml")
	if err != nil {
		b.Fatal(err)
	}
	ended = new(atomic.Int64)
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	records := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.DebugLevel))
	warns, warned := observer.New(zapcore.WarnLevel)
	srv, err := New(cfg, zap.New(warns), WithRecordLog(records),
		WithTeardownHook(func(*engine.Teardown) { ended.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(context.Background()); err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			b.Errorf("serve: %v", err)
		}
		for _, e := range warned.FilterMessageSnippet("relay on goroutines").All() {
			b.Errorf("%s: %v", e.Message, e.ContextMap())
		}
	})
	// Serve starts the loops (relay = "loop") and the pools: wait for it,
	// so that what they hold is in a benchmark's baseline, not its figures.
	for deadline := time.Now().Add(5 * time.Second); !srv.Serving(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			b.Fatal("not serving after 5s")
		}
	}
	return srv.Addrs()[0].String(), ended
}

// benchConfig is one listener in front of backend at address, in mode
// protocol, relaying as relay says ("": the default, not written),
// logging records as teardown says; warm < 0 keeps the default.
func benchConfig(address, protocol, relay, teardown string, warm, maxConns int) string {
	pool := ""
	if warm >= 0 {
		pool += fmt.Sprintf("warm = %d\n", warm)
	}
	if maxConns >= 0 {
		pool += fmt.Sprintf("max_conns = %d\n", maxConns)
	}
	top := ""
	if relay != "" {
		top = fmt.Sprintf("relay = %q\n", relay)
	}
	return fmt.Sprintf(`%s
[log]
teardown = %q
[[listener]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
[[backend]]
name = "app"
address = %q
protocol = %q
  [backend.pool]
  %s
`, top, teardown, address, protocol, pool)
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// oneConn is one client connection: it sends req, reads the response and,
// when the backend answers and closes, reads to EOF before closing;
// otherwise it closes first once it has the response.
func oneConn(b *testing.B, addr, req string, buf []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	if req == benchRequest { // to EOF: http1 mode adds a Connection header
		n, err := readAll(c, buf)
		if err != nil || n < len(response) {
			b.Fatalf("response: %d bytes, %v", n, err)
		}
	} else if _, err := io.ReadFull(c, buf[:len(response)]); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// readAll reads c to EOF into buf, over and over, and returns the bytes
// read.
func readAll(c net.Conn, buf []byte) (int, error) {
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// BenchmarkConn is accept → dial → relay → close → record for one
// connection per op, sequentially: ns/op is a connection's latency from
// dial to the session's end, cpu-µs/conn the process's CPU (client and
// backend included: subtract direct) per connection. tcp relays on the
// event loops (the default); the tcp_goroutines variants are tcp/records
// and tcp/records_errors with relay = "goroutines".
// Each connection leaves two TIME-WAIT sockets on the host's loopback for
// 60 s: 3000x over all variants is some 55,000.
func BenchmarkConn(b *testing.B) {
	for _, tc := range []struct {
		name, protocol, relay, teardown, req string
		warm                                 int
		direct                               bool
	}{
		{name: "direct", req: benchRequest, direct: true},
		{name: "direct/client_first", req: benchKeepAlive, direct: true},
		{name: "tcp/records", protocol: "tcp", teardown: "all", req: benchRequest, warm: -1},
		{name: "tcp/records_errors", protocol: "tcp", teardown: "errors", req: benchRequest, warm: -1},
		{name: "tcp/client_first", protocol: "tcp", teardown: "all", req: benchKeepAlive, warm: -1},
		{name: "tcp/no_warm_pool", protocol: "tcp", teardown: "all", req: benchRequest, warm: 0},
		{name: "tcp_goroutines/records", protocol: "tcp", relay: "goroutines", teardown: "all", req: benchRequest, warm: -1},
		{name: "tcp_goroutines/records_errors", protocol: "tcp", relay: "goroutines", teardown: "errors", req: benchRequest, warm: -1},
		{name: "http1/records", protocol: "http1", teardown: "all", req: benchRequest, warm: -1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := benchBackend(b)
			var ended *atomic.Int64
			if !tc.direct {
				addr, ended = benchServer(b, benchConfig(addr, tc.protocol, tc.relay, tc.teardown, tc.warm, -1))
			}
			buf := make([]byte, 512)
			oneConn(b, addr, tc.req, buf) // the pool warms, goroutines exist
			waitEnded(b, ended, 1)
			b.ReportAllocs()
			runtime.GC()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				oneConn(b, addr, tc.req, buf)
			}
			waitEnded(b, ended, int64(b.N)+1)
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/conn")
		})
	}
}

// benchCandidates are what the keep-alive and idle benchmarks compare:
// no proxy, tcp on the loops (the default) and on goroutines, and http1.
var benchCandidates = []struct {
	name, protocol, relay string
	direct                bool
}{{"direct", "", "", true}, {"tcp", "tcp", "", false}, {"tcp_goroutines", "tcp", "goroutines", false}, {"http1", "http1", "", false},
	{"http1_goroutines", "http1", "goroutines", false}}

// BenchmarkKeepAlive is one request and its response per op on a single
// keep-alive client connection, the load a load balancer's connection
// pool makes: ns/op is a request's round trip, cpu-µs/req the process's
// CPU per request (client and backend included: subtract direct) and
// allocs/op what the process allocates for one. http1 takes the pooled
// backend connection for each request and gives it back after the
// response; tcp relays on one backend connection for the session.
func BenchmarkKeepAlive(b *testing.B) {
	for _, tc := range benchCandidates {
		b.Run(tc.name, func(b *testing.B) {
			addr := benchBackend(b)
			var ended *atomic.Int64
			if !tc.direct {
				addr, ended = benchServer(b, benchConfig(addr, tc.protocol, tc.relay, "all", -1, -1))
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, len(response))
			ask := func() {
				if err := keepAliveRequest(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			ask() // the session, its backend connection and goroutines exist
			b.ReportAllocs()
			runtime.GC()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				ask()
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/req")
			c.Close()
			waitEnded(b, ended, 1)
		})
	}
}

// BenchmarkKeepAliveConcurrent is BenchmarkKeepAlive over 50 client
// connections at once, a request in flight on each: the sessions take the
// pool's backend connections in any order, and what a request costs
// under concurrency (allocations per backend connection rather than per
// session, wake-ups) shows here and not one request at a time.
func BenchmarkKeepAliveConcurrent(b *testing.B) {
	const conns = 50
	for _, tc := range []struct{ name, protocol string }{{"tcp", "tcp"}, {"http1", "http1"}} {
		b.Run(tc.name, func(b *testing.B) {
			addr, ended := benchServer(b, benchConfig(benchBackend(b), tc.protocol, "", "all", -1, -1))
			cs := make([]net.Conn, conns)
			for i := range cs {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				cs[i] = c
			}
			errs := make(chan error, conns)
			run := func(n int) {
				var wg sync.WaitGroup
				for _, c := range cs {
					wg.Go(func() {
						buf := make([]byte, len(response))
						for range n {
							if err := keepAliveRequest(c, buf); err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
			}
			run(1) // every session and backend connection exists
			b.ReportAllocs()
			runtime.GC()
			per := max(b.N/conns, 1)
			cpu0 := cpuTime(b)
			b.ResetTimer()
			run(per)
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/1e3/float64(per*conns), "cpu-µs/req")
			for _, c := range cs {
				c.Close()
			}
			waitEnded(b, ended, conns)
		})
	}
}

// keepAliveRequest sends one keep-alive request on c and reads its
// response into buf (len(response) bytes).
func keepAliveRequest(c net.Conn, buf []byte) error {
	if _, err := io.WriteString(c, benchKeepAlive); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

// waitEnded waits until n sessions wrote their records (nil: no proxy).
// Polling is the way to wait for a count; the deadline bounds it.
func waitEnded(b *testing.B, ended *atomic.Int64, n int64) {
	if ended == nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); ended.Load() < n; time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions ended after 10s", ended.Load(), n)
		}
	}
}

// BenchmarkIdle holds idleConns idle connections, each after one byte
// each way (so both copiers run), and reports what each holds in the
// process: heap and stacks in use, and goroutines. Client and backend
// keep their sockets without goroutines; "direct" is their share.
// tcp relays on the event loops (the default): its sessions should hold
// no goroutine (the loops' own are there before the first connection);
// tcp_goroutines is tcp with relay = "goroutines"; http1 runs on the
// loops, http1_goroutines on goroutines, measured once every session
// parked.
//
//	taskset -c 0 go test -run '^$' -bench Idle -benchtime 1x ./proxy
func BenchmarkIdle(b *testing.B) {
	const idleConns = 2000
	for _, tc := range benchCandidates {
		b.Run(tc.name, func(b *testing.B) {
			be := newHoldingBackend(b)
			addr := be.addr
			var ended *atomic.Int64
			if !tc.direct {
				addr, ended = benchServer(b, benchConfig(addr, tc.protocol, tc.relay, "all", -1, 0))
			}
			// An idle http1 session on a goroutine parks after parkFirst:
			// what it holds idle is measured once every session parked.
			// On the loops it holds nothing more once its response is out.
			settle := func(int) {}
			if tc.protocol == "http1" && tc.relay == "goroutines" {
				var parks atomic.Int64
				parkedHook = func() { parks.Add(1) }
				defer func() { parkedHook = nil }()
				settle = func(round int) {
					want := int64(round+1) * idleConns
					for deadline := time.Now().Add(10 * time.Second); parks.Load() < want; time.Sleep(time.Millisecond) {
						if time.Now().After(deadline) {
							b.Fatalf("%d of %d idle sessions parked after 10s", parks.Load()-want+idleConns, idleConns)
						}
					}
				}
			}
			b.ReportAllocs()
			for i := range b.N {
				heap, stack, gs := idleCost(b, addr, be, idleConns, tc.protocol == "http1", func() { settle(i) })
				b.StopTimer()
				waitEnded(b, ended, int64(i+1)*idleConns) // the next round starts from none
				b.StartTimer()
				b.ReportMetric(heap/idleConns, "heap-B/conn")
				b.ReportMetric(stack/idleConns, "stack-B/conn")
				b.ReportMetric((heap+stack)/idleConns, "B/idle-conn")
				b.ReportMetric(gs/idleConns, "goroutines/conn")
			}
		})
	}
}

// idleCost opens n connections through addr, one exchange each, and
// measures the growth of heap, stacks and goroutines they hold once settle
// returned; then it closes them.
func idleCost(b *testing.B, addr string, be *holdingBackend, n int, http bool, settle func()) (heap, stack, gs float64) {
	b.StopTimer()
	m0, g0 := memNow()
	b.StartTimer()
	req, want := []byte("x"), 1
	if http {
		req, want = []byte(benchKeepAlive), len(response)
	}
	buf := make([]byte, len(response))
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		be.closeAll()
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:want]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	settle()
	m1, g1 := memNow()
	b.StartTimer()
	heap = float64(int64(m1.HeapInuse) - int64(m0.HeapInuse))
	stack = float64(int64(m1.StackInuse) - int64(m0.StackInuse))
	return heap, stack, float64(g1 - g0)
}

func memNow() (runtime.MemStats, int) {
	runtime.GC()
	runtime.GC() // a sync.Pool keeps what was put in it for one collection
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m, runtime.NumGoroutine()
}

// holdingBackend answers each connection's first bytes (one byte with one
// byte; HTTP requests, for as long as they come, with response) and keeps
// the connection: one that got its byte keeps no goroutine.
type holdingBackend struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newHoldingBackend(b *testing.B) *holdingBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	be := &holdingBackend{addr: ln.Addr().String()}
	b.Cleanup(func() { ln.Close(); be.closeAll(); be.wg.Wait() })
	be.wg.Add(1)
	go func() {
		defer be.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			be.mu.Lock()
			be.conns = append(be.conns, c)
			be.mu.Unlock()
			be.wg.Add(1)
			go func() { defer be.wg.Done(); answer(c) }()
		}
	}()
	return be
}

// answer answers c's bytes until a single byte (answered with one byte)
// or EOF. A warm pooled connection waits here until it is used.
func answer(c net.Conn) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		switch {
		case err != nil:
			return
		case n == 1:
			c.Write(buf[:1])
			return
		}
		if _, err := io.WriteString(c, response); err != nil {
			return
		}
	}
}

func (be *holdingBackend) closeAll() {
	be.mu.Lock()
	defer be.mu.Unlock()
	for _, c := range be.conns {
		c.Close()
	}
	be.conns = nil
}
