package admin

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
	"github.com/closeproxy/closeproxy/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig has one listener "web" on listen and one backend "app" at
// backend.
func testConfig(listen, backend string) *config.Config {
	return &config.Config{
		Admin:     config.Admin{KernelSample: 10 * time.Millisecond},
		Listeners: []config.Listener{{Name: "web", Listen: listen, Backend: "app"}},
		Backends:  []config.Backend{{Name: "app", Address: backend, ConnectTimeout: time.Second}},
	}
}

// serve runs a.Serve on 127.0.0.1:0 until the test ends, checks it returns
// nil, and returns the base URL.
func serve(t testing.TB, a *Admin) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// get fetches url on a fresh connection and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads /metrics into series → value, a series spelled as in the
// text format: name{label="value",…} with labels in name order.
func scrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// fakeServer stands in for the proxy server.
type fakeServer struct {
	serving atomic.Bool
	stats   map[string]pool.Stats
	servers map[string][]proxy.ServerStatus
	parked  int
	writing int64
}

func (f *fakeServer) Serving() bool                    { return f.serving.Load() }
func (f *fakeServer) PoolStats() map[string]pool.Stats { return f.stats }
func (f *fakeServer) Servers() map[string][]proxy.ServerStatus {
	return f.servers
}
func (f *fakeServer) ParkedHTTP1() int { return f.parked }

func (f *fakeServer) RecordsWriting() int64 { return f.writing }

func TestHealthz(t *testing.T) {
	base := serve(t, New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t)))
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q, want 200 ok", code, body)
	}
}

func TestPoolMetricsAtScrape(t *testing.T) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	base := serve(t, a)
	if got := scrape(t, base); hasPrefix(got, "closeproxy_pool_") {
		t.Fatalf("pool metrics before Attach: %v", got)
	}
	if got := scrape(t, base)["closeproxy_http1_sessions_parked"]; got != 0 {
		t.Fatalf("parked sessions before Attach: %v, want 0", got)
	}
	a.Attach(&fakeServer{stats: map[string]pool.Stats{
		"app": {Idle: 3, InUse: 2, Dialed: 7, Evicted: 4, Reused: 11},
	}, parked: 5, writing: 2})
	want := map[string]float64{
		`closeproxy_http1_sessions_parked`:                          5,
		`closeproxy_teardown_records_writing`:                       2,
		`closeproxy_pool_connections{backend="app",state="idle"}`:   3,
		`closeproxy_pool_connections{backend="app",state="in_use"}`: 2,
		`closeproxy_pool_dialed_total{backend="app"}`:               7,
		`closeproxy_pool_evicted_total{backend="app"}`:              4,
		`closeproxy_pool_reused_total{backend="app"}`:               11,
	}
	expect(t, scrape(t, base), want)
}

func hasPrefix(m map[string]float64, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// expect fails for every series of want whose value differs in got.
func expect(t testing.TB, got, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s missing", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
}

func TestServeReturnsListenerFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))
	if err := a.Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve on a closed listener returned nil")
	}
}

func TestProcessAndGoCollectors(t *testing.T) {
	got := scrape(t, serve(t, New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t))))
	want := []string{"go_goroutines"}
	if runtime.GOOS == "linux" {
		want = append(want, "process_start_time_seconds")
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
}

// closeproxy_teardown_records_lost_total reads WithRecordsLost's count
// at each scrape, 0 without it.
func TestRecordsLostAtScrape(t *testing.T) {
	base := serve(t, New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t)))
	if got := scrape(t, base)["closeproxy_teardown_records_lost_total"]; got != 0 {
		t.Fatalf("lost records without a count: %v, want 0", got)
	}
	var lost atomic.Uint64
	base = serve(t, New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zaptest.NewLogger(t), WithRecordsLost(lost.Load)))
	lost.Store(7)
	expect(t, scrape(t, base), map[string]float64{"closeproxy_teardown_records_lost_total": 7})
}
